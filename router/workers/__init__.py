"""Worker processes: ``workers: N`` > 1 runs the data path in N processes that follow
one decider (probes, failover machine, promotion, admin API, /metrics).

The rooms inside: :mod:`.supervisor` (the decider's side: listeners, processes,
restarts), :mod:`.worker` (a worker's main), :mod:`.datapath` (a worker's proxy),
:mod:`.view` (what a follower knows of a service, and how it follows it), :mod:`.channel`
(framing), :mod:`.reports` (traffic reports), :mod:`.metricsmerge` (the summed /metrics),
:mod:`.host` (what the router asks of it).
"""
