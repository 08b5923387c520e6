"""The service layer: the server's behaviour, one object per concern, shared by every protocol.

Atelier's API (``api.py``), the websocket session (``session.py``) and the ComfyUI-compatible routes
(``comfy/routes.py``) call these services and translate their domain results into their own shapes; no
service knows about HTTP. Service methods block (SQLite, folder walks, image decoding, validation): the
protocols call them from worker threads, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from atelier.engine.runtime import Engine

from .gallery_store import GalleryStore
from .service_catalog import CatalogService
from .service_convert import ConvertService
from .service_files import FileService, Limits
from .service_gallery import GalleryService
from .service_jobs import JobService
from .service_library import LibraryService
from .service_models import ModelBrowserService
from .service_pipelines import PipelineService
from .service_system import SystemService
from .service_userdata import UserDataService
from .settings import Settings
from .store import Store


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: Store
    jobs: JobService
    catalog: CatalogService
    library: LibraryService
    pipelines: PipelineService
    files: FileService
    system: SystemService
    userdata: UserDataService
    convert: ConvertService
    models: ModelBrowserService
    gallery: GalleryService


def open_services(engine: Engine, settings: Settings) -> Services:
    """Open the store (migrating its schema; ``SchemaError`` if it is from a newer Atelier) and build the
    services over it and ``engine``."""
    store = Store(settings.database)
    limits = settings.limits or engine.config.limits
    jobs = JobService(engine, store, limits, settings.max_queued)
    files = FileService(
        engine.folders,
        Limits(
            settings.max_upload_bytes,
            settings.max_image_pixels,
            max_frames=limits.max_frames,
            max_decoded_bytes=limits.max_decoded_bytes,
        ),
    )
    gallery_db = settings.database
    gallery_path = (
        ":memory:" if str(gallery_db) == ":memory:" else gallery_db.with_name(gallery_db.stem + ".gallery.db")
    )
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        jobs=jobs,
        catalog=CatalogService(engine),
        library=LibraryService(store),
        pipelines=PipelineService(engine, jobs),
        files=files,
        system=SystemService(engine, jobs),
        userdata=UserDataService(settings.users_root, settings.multi_user),
        convert=ConvertService(engine),
        models=ModelBrowserService(engine.folders, engine.registry),
        gallery=GalleryService(
            engine.folders.output, engine.folders.temp, GalleryStore(gallery_path), store, files
        ),
    )
