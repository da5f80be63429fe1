"""The order-claim job done without kamigate (Celery, arq), timed beside kamigate's worker.

Run: ``python -m bench.peers [--orders 20000] [--runs 3]``; see README.md in this folder.
"""
