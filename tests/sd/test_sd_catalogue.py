"""The node library's catalogue: socket types declared as objects tied to their carriers, one table of
colours (the canvas reads /atelier/v1/types), every run() matching its declared inputs."""

from __future__ import annotations

import inspect

from atelier.engine import types as T
from atelier.engine.models import sockets
from atelier.engine.runtime import Engine


def test_every_socket_of_the_library_is_declared_with_a_socket_type_object(engine: Engine) -> None:
    bare = []
    for name in engine.registry:
        spec = engine.registry.get(name).spec  # type: ignore[union-attr]
        for s in (*spec.inputs, *spec.outputs):
            if s.type not in T.PRIMITIVES and s.type != T.COMBO and s.socket is None:
                bare.append(f"{name}.{s.name}: {s.type}")
    assert bare == []


def test_socket_types_describe_themselves_from_one_table(engine: Engine) -> None:
    declared = {v.name: v for v in vars(sockets).values() if isinstance(v, T.SocketType)}
    described = engine.registry.describe_types()
    for name in ("MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "INT", "FLOAT", "STRING"):
        assert name in described, name
    for name, t in declared.items():
        if name in described:
            assert described[name] == {"description": t.description, "color": t.color}


def test_library_nodes_take_exactly_their_declared_inputs(engine: Engine) -> None:
    for name in engine.registry:
        cls = engine.registry.get(name)
        params = list(inspect.signature(cls.run).parameters)[2:]  # type: ignore[union-attr]
        assert params == [i.name for i in cls.spec.inputs], name  # type: ignore[union-attr]
