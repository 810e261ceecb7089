"""Several routers sharing failover decisions in etcd (docs/cluster.md).

The room's modules: :mod:`.etcd` (the async etcd v3 client over the grpc-gateway JSON
API; :mod:`.etcd_wire` its wire format, :mod:`.etcd_watch` its watch stream). Nothing
here is imported by :mod:`router.failover` or :mod:`router.proxy`: the failover
controller takes its store through a protocol of its own.
"""
