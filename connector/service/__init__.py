"""Service stage: runs messages through the pipeline, polls accounts, serves HTTP, and the
admin commands' logic. The only stage that ties the I/O ones (fetch, hosts, store) together."""
