"""The worker: read → reclaim → match → claim → (replay), one shard batch at a time.

consumer (the loop and its entry points: run, drain, chores), book and shard_view (what a
batch is matched against), matching (the switch between the compiled kernel and its
pure-Python twin, matching_py, over matching_types), claim_plan (the decisions as one claim.lua
call), replay (answers for orders already decided), the lines (waiting, parking, drain),
poison, housekeeping and webhooks.
"""
