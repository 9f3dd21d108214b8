"""`cmtrain -m hparams_search=optuna`: a Hydra sweeper on Optuna's ask/tell API, with the study kept on disk.

Why our own sweeper: the Hydra project's `hydra-optuna-sweeper` pins Optuna 2.x and keeps the study in memory, so a
search that crashes, is stopped or is pre-empted loses every trial's record; nothing else maintained plugs Optuna
into Hydra's launchers. The modules:

* `space`: Hydra's sweep syntax (`interval`, `tag(log, …)`, `choice`, `range`) as Optuna distributions;
* `study`: the study's storage (a journal file in the sweep folder by default, or any Optuna storage URL), and the
  lease each sweeper process keeps on the trials it runs, so an interrupted trial is retried by the next run;
* `sweeper`: the sweep: ask trials, launch them as Hydra jobs (any launcher), tell their results, write the best
  trial and the parameter importances (`hydra_plugins/crossmodal_optuna_sweeper` is the thin class Hydra finds);
* `trial`: the job's side: report the monitored metric after every epoch and stop a trial the pruner gives up on.
"""
