"""From settings to the data and objects of a run: the table read and checked with the task's labels turned into
targets (`labels`, `data`), the inputs prepared and the loaders built; shared by the CLI, the Python API and
distillation, above the data layer, the model parts and the engine."""
