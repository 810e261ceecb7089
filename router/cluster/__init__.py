"""Several routers sharing failover decisions in etcd (docs/cluster.md).

The room's modules: :mod:`.etcd` (the async etcd v3 client over the grpc-gateway JSON
API; :mod:`.etcd_wire` its wire format, :mod:`.etcd_watch` its watch stream);
:mod:`.pair` (what the router builds and runs), :mod:`.node` (the member lease, the
watch, the views) and :mod:`.steer` (each service's role: campaign, lead, follow);
:mod:`.shared` (the guarded writes: the controller's store and promotion hooks);
:mod:`.commands` (operator commands carried out by the decider); and the pure
decisions :mod:`.quorum`, :mod:`.lease`, :mod:`.records`, :mod:`.keys`. Nothing here is
imported by :mod:`router.failover` or :mod:`router.proxy`: the failover controller takes
its store, gate and hooks through protocols of its own (router/failover/store.py).
"""
