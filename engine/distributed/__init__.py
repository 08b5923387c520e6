"""Atelier on a Ray cluster: worker actors that each own an engine, and the scheduler in the server that
routes queued jobs to them (``atelier serve --ray``, ``atelier worker``). Ray is an optional extra
(``pip install atelier[ray]``): nothing here imports it until a cluster is asked for."""
