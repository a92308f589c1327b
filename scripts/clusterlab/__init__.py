"""The multi-host rolling lab behind ./scripts/cluster and tests/test_cluster.py.

Several hosts, each the real `prefork` command in a network namespace of its
own, behind a real HAProxy in the root namespace; bounded load through
HAProxy while every host is rolled in turn, and the figures of each
operation: requests sent, failed, and how long each host was out of
rotation.  Root only (namespaces, veth pairs, apt-get for HAProxy).

    errors.py    Unavailable (the lab cannot run here: one line) and LabError
    procs.py     processes by pid: alive, reaped (also adopted orphans), killed
    netns.py     the namespaces, veth pairs and the lab's private /24; stale leftovers
    app.py       the hosts' WSGI application (copied into each host's directory)
    hosts.py     one host: its prefork master(s), files, log, signals
    haproxy.py   HAProxy: installed when missing, configured, started, its stats socket
    rotation.py  which hosts HAProxy has in rotation, over time (its stats, polled)
    load.py      the clients: bounded HTTP load through HAProxy, every outcome kept
    lab.py       all of the above set up together, and torn down whatever happens
    roll.py      the operations (drain + restart, HUP, USR2, SIGKILL), their figures, targets
    report.py    the final table
"""
