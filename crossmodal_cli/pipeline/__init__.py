"""From settings to the data of a run, above the data layer, the model parts and the engine; shared by the CLI,
the Python API and distillation:

* `data.py`: the demo data generated, the CSV(s) or DataFrames read and checked (`load_data`);
* `labels.py`: the task's label columns, fit and targets around `data.table.load_table`;
* `inputs.py`: the encoders' input spec (image size, resize, sample rate) and the tokenizer;
* `materialise.py`: a DataFrame given to `fit` written into the run folder;
* `loaders.py`: the DataLoaders of every split, or the feature cache's (above `factory`: it keys cached features
  by the encoder's config).
"""
