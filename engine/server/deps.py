"""FastAPI dependencies shared by the route modules."""

from __future__ import annotations

from fastapi import Request

from .service import Services


async def services_of(request: Request) -> Services:
    """The services of the app serving ``request``. ``async``: a plain attribute read stays on the loop
    (FastAPI would send a sync dependency to the thread pool)."""
    services: Services = request.app.state.services
    return services
