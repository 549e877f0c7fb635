"""Side-by-side transfer bench: quicstore's reference peers on 127.0.0.1 in one run.

Run from the repository root::

    python -m tools.bench --install          # fresh machine: apt + pip (see requirements.txt)
    python -m tools.bench --quick            # < 3 minutes: 1 rep, smaller objects
    python -m tools.bench                    # full profile (< 20 minutes): medians of 3
    python -m tools.bench --systems aioquic,nginx --workloads a,c --json out.json

Workloads: (a) one big GET on one connection; (b) the same as 8 parallel range requests;
(c) 4 KiB GETs on a warm connection, sequential (p50/p99 ms) and 32 in flight (req/s);
(d) an epoch of 1 MiB objects, 32 in flight (MB/s); (e) (a)-like through the UDP impairment
proxy (tools/impair_proxy.py; 10 ms each way, 1% loss each way) for QUIC systems; (f) (a) with
1452-byte datagrams for QUIC systems with a knob. Sizes per profile: tools/bench/model.py.

Adding a system (e.g. quicstore): one module in tools/bench/systems/ with ``systems()``
returning objects that satisfy ``tools.bench.systems.base.System`` (subclass ``ManagedSystem``
to get server caching and the impairment hook), plus one line in
``tools/bench/systems/__init__.py``. A Python client implements ``tools.bench.driver.Fetcher``
(connect / get / close) and calls ``tools.bench.driver.main``; ``run_driver`` measures it.
"""
