"""Who may download what, from where, and the record of it: the edge's access pipeline.

Order (DESIGN.md, "Access pipeline on an edge"): client address, IP rules, geo rules,
identity (token, basic auth, signed URL, or anonymous), permission, audit.
"""
