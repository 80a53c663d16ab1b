"""The remote job engine, for any backend behind the RemoteBackend interface.

- ``attempts``: the bookkeeping of remote attempts (one paid submission each, polls, adoption
  of a request whose id was lost);
- ``submit``: one delivery of a remote job — at most one paid submission;
- ``poller``: a thread per worker process polling every accepted request, holding no slot;
- ``limits``: the limits shared by all workers (requests in flight, submits per second) and the
  provider's refusal of the credentials, kept in Redis.
"""
