"""The web console of the Distribution service, served at ``/ui/``: server-rendered pages over the
same service objects the REST API calls, with live distribution progress by server-sent events."""
