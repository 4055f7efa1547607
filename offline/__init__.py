"""Scoring recorded drives off the vehicle: ``alscout score`` on one machine or a Ray cluster.

The same decode, scoring pipeline and online selection rule as the vehicle's server
(:mod:`alscout.server`), driven over whole recordings instead of a gRPC stream:

- :mod:`~alscout.offline.plan`: which recordings a run covers, and their ids.
- :mod:`~alscout.offline.settings`: what every worker is given (model, pipeline,
  selector, sink, the earlier uploads of SPEC §2b's dt2 rule).
- :mod:`~alscout.offline.scorer`: one worker scoring one recording.
- :mod:`~alscout.offline.outputs`: the output folder, committed one recording at a time.
- :mod:`~alscout.offline.local_engine`, :mod:`~alscout.offline.ray_engine`: where the
  workers run; :mod:`~alscout.offline.run`: the driver tying them together.

It sits above the server (whose code it drives) and below the apps; like the server it
never imports PyTorch, so score workers install the edge dependencies alone.
"""
