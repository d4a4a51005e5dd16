"""The message contract between the node and its workers: task names, queues, arguments.

Messages carry a job id and nothing else; everything a task needs is in the database.
The node sends tasks by name, so it never imports the worker's (torch-heavy) code.
"""

ANALYZE_TASK = "ainode.analyze_series"  # args: (job_id: int)
DELIVER_TASK = "ainode.deliver_results"  # args: (job_id: int)

GPU_QUEUE = "gpu"  # load -> preprocess -> infer -> encode
IO_QUEUE = "io"  # sending results to the archive
