"""What a search leaves in its sweep folder when it ends: optimization_results.yaml (the best trial, its overrides and
folder, the trials by state, the parameter importances), also printed."""
from __future__ import annotations

from pathlib import Path

import yaml

from crossmodal_cli.search import space
from crossmodal_cli.search.study import RETRY_OF


def importances(study) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances (fANOVA) over the finished trials, or {} and why not."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return {}, f"importances need at least 2 finished trials ({len(done)} so far)"
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:
        return {}, f"importances not computed: {err}"
    return {k: round(float(v), 4) for k, v in found.items()}, ""


def write_results(study, sweep_dir: Path, storage: str) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    again = {t.user_attrs.get(RETRY_OF) for t in trials}
    states = {state.name.lower(): sum(t.state == state and t.number not in again for t in trials)
              for state in TrialState if any(t.state == state and t.number not in again for t in trials)}
    if again - {None}:
        states["interrupted and run again"] = len(again - {None})
    result: dict = {"study_name": study.study_name, "storage": storage, "direction": study.direction.name.lower(),
                    "trials": states}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        result.update(best_value=best.value, best_trial=best.number,
                      best_folder=str(sweep_dir / str(best.user_attrs.get("crossmodal:folder", best.number))),
                      best_params=dict(best.params),
                      best_overrides=[space.as_override(k, v) for k, v in best.params.items()])
    result["importances"], why = importances(study)
    (sweep_dir / "optimization_results.yaml").write_text(yaml.safe_dump(result, sort_keys=False, allow_unicode=True))
    counts = ", ".join(f"{n} {s}" for s, n in states.items())
    lines = [f"Optuna study '{study.study_name}': {len(trials)} trials ({counts})"]
    if complete:
        lines.append(f"best: trial {result['best_trial']} ({result['best_value']:.4g}) in {result['best_folder']}; "
                     f"overrides: {' '.join(result['best_overrides'])}")
    lines.append("parameter importances: " + (", ".join(f"{k} {v:.2f}" for k, v in result["importances"].items())
                                               or why))
    lines.append(f"written: {sweep_dir / 'optimization_results.yaml'}; run the same command again to continue "
                 f"the study (raise hydra.sweeper.n_trials for more trials)")
    print("\n".join(lines), flush=True)
    return result
