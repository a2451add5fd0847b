"""Everything on disk that topofr defines, owned in one place (the lowest floor of the library).

atomic      files and folders that appear whole or not at all (`atomic_path`, `write_*`, `StagedDir`)
outputs     the output policy every command follows (`check_output`)
checkpoint  the training checkpoint (`Checkpoint`), its listing and a safe loader for foreign files
run_dir     the layout of a training run's folder (`RunDir`)
"""
