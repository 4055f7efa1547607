"""Object storage shared by the vehicle and the fleet: sinks, the upload layout, backoff.

The vehicle's uploader (:mod:`alscout.server.uploader`) writes flagged frames with it;
the fleet's ingest (:mod:`alscout.trainer.fleet.sources`) reads them back with it. It
sits below both and imports only the root package.
"""
