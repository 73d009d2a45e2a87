"""How many bundles one page of the REST API's bundle lists holds.

The store reads by it, the API and the console page by it, and the CLI reads pages until a
short one: kept apart from the store so that the CLI needs neither it nor its database layer.
"""

PAGE_SIZE = 10
