"""Running the pipeline's stages somewhere other than this process: DVC's experiment queue on one node
(`queue`) and SLURM across nodes (`cluster`, `job`, `finish`). Neither schedules anything itself: DVC
decides what is stale and restores what is cached, SLURM decides where and when a job runs, and a shared
DVC remote (a directory on a shared filesystem) carries outputs and run-cache entries between them.

Nothing here is imported by a stage, so changing it never makes a result stale.
"""
