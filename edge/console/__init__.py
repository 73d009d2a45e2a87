"""The edge's web console at ``/ui/``: its repos as folders, the audit trail with search and
export, the access rules, and signed URLs for a file, over the same functions as its API."""
