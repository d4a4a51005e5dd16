"""Jobs: the Celery application, the message contract, and the one owner of job state."""
