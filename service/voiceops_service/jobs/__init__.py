"""Long texts as jobs: chunks checkpointed in Redis, made by workers in every pod (docs/jobs.md).

``models`` (the API's bodies and answers), ``store`` (every Redis key and script),
``worker`` (takes chunks through a Streams consumer group), ``api`` (the routes) and
``runtime`` (what the app starts and stops).
"""
