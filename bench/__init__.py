"""satchel benchmarks: each one runs satchel side by side with its peer, in the same run.

``python -m bench b1|b2|b3|all [--runs N] [--size ...]``; results go to ``bench/results/*.json``
and a human summary is printed (paste it into ``bench/RESULTS.md``). See DESIGN.md for targets.
"""
