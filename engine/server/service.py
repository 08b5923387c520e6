"""The service layer: the server's behaviour, one object per concern, shared by every protocol.

Atelier's API (``api.py``), the websocket session (``session.py``) and the ComfyUI-compatible routes
(``comfy/routes.py``) call these services and translate their domain results into their own shapes; no
service knows about HTTP. Service methods block (SQLite, folder walks, image decoding, validation): the
protocols call them from worker threads, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from atelier.engine.runtime import Engine

from .service_catalog import CatalogService
from .service_convert import ConvertService
from .service_files import FileService, Limits
from .service_jobs import JobService
from .service_library import LibraryService
from .service_system import SystemService
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
    files: FileService
    system: SystemService
    convert: ConvertService


def open_services(engine: Engine, settings: Settings) -> Services:
    """Open the store (migrating its schema; ``SchemaError`` if it is from a newer Atelier) and build the
    services over it and ``engine``."""
    store = Store(settings.database)
    jobs = JobService(engine, store)
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        jobs=jobs,
        catalog=CatalogService(engine),
        library=LibraryService(store),
        files=FileService(engine.folders, Limits(settings.max_upload_bytes, settings.max_image_pixels)),
        system=SystemService(engine, jobs),
        convert=ConvertService(engine),
    )
