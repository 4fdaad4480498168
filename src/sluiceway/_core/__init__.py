"""The engine, one module per step of the data path.

submit -> ``_admit`` (tokens: capacity and routing in one atomic pop)
       -> ``_shard`` (queues; keyed pipelines queue per virtual partition)
       -> ``_batch`` (cutting a batch off a shard's queues)
       -> ``_handle`` (worker threads: claim a due shard, call the handler)
       -> ``_outcome`` (processed or dead-lettered; tokens go back; completions fire)
``_priority`` is the fast lane beside all of this; ``_pipeline`` ties it together.
"""
