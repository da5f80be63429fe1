"""kamigate: order ingestion for shops that sell secret codes.

The rooms, top to bottom; a room imports only rooms below it:

    cli/        the `kamigate` command, one module per command group
    http/       the HTTP face: app factory, routes, auth, codec, problems, pages, OpenAPI
    door/       the front door's core: admission, ingest, replies, circuit, surge, backpressure
    worker/     read → reclaim → match → claim; lines, poison, housekeeping, webhooks
    wallet/     prices, points and coupons          stock/     import, void, rotate, reconcile
    controls/   maintenance, pauses, calendars, token buckets
    config/     settings, check, loading, diff, live config, watch, directory
    store/      keys, scripts, connections, embedded Redis, records, audit, sealing
    lua/        the scripts (a KEYS/ARGV/returns header on each)

and the shared vocabulary here: wire (wire types), views (the Order view), errors, clock,
metrics, tasks, failpoints.
"""

__version__ = "0.1.0"
