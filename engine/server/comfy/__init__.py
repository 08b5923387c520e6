"""The ComfyUI compatibility layer: ComfyUI's routes, messages and shapes, translated to and from Atelier's
service layer (``engine/server/service_*.py``). It owns no behaviour of its own."""
