"""Learner specs (`iclab eval --learners`, `make_learner`): every malformed spec of every learner is one line that
names the bad part and shows the learner's usage."""

import pytest

from iclab.algorithms.registry import LearnerSpecError, make_learner
from iclab.config import task_config
from iclab.tasks.linear import LinearRegressionTask


def _pool_task(noise_var=0.2, pool_size=8):
    return LinearRegressionTask(task_config("linear", d=3, n_points=5, noise_var=noise_var, pool_size=pool_size))


BAD_SPECS = [
    # least_squares
    ("ridge", None, "LAMBDA"),
    ("ridge:-1", None, "LAMBDA"),
    ("ridge:abc", None, "LAMBDA"),
    ("ridge:inf", None, "LAMBDA"),
    ("ols:3", None, "positional"),
    ("ols:foo=1", None, "foo"),
    ("ols:float64=maybe", None, "float64"),
    ("bayes:0.1", None, "SIGMA2"),
    ("bayes", None, "task"),
    ("bayes:-1:1", None, "SIGMA2"),
    ("bayes:0.1:0", None, "TAU2"),
    # local
    ("knn", None, "K"),
    ("knn:0", None, "K"),
    ("knn:2.5", None, "K"),
    ("knn:abc", None, "K"),
    ("knn:3:4", None, "positional"),
    ("knn:3:weights=distance", None, "weights"),
    ("averaging:2", None, "positional"),
    ("averaging:foo=1", None, "foo"),
    # newton
    ("newton", None, "K"),
    ("newton:-1", None, "K"),
    ("newton:abc", None, "K"),
    ("newton:2.5", None, "K"),
    ("newton:5:3", None, "positional"),
    ("newton:5:foo=1", None, "foo"),
    ("newton:5:float64=maybe", None, "float64"),
    # sparse
    ("lasso", None, "ALPHA"),
    ("lasso:0", None, "ALPHA"),
    ("lasso:-1", None, "ALPHA"),
    ("lasso:abc", None, "ALPHA"),
    ("lasso:nan", None, "ALPHA"),
    ("lasso:0.1:0.2", None, "positional"),
    ("lasso:0.1:iters=0", None, "iters"),
    ("lasso:0.1:iters=2.5", None, "iters"),
    ("lasso:0.1:tol=-1", None, "tol"),
    ("lasso:0.1:float64=maybe", None, "float64"),
    ("lasso:0.1:max_iter=5", None, "max_iter"),
    # gd_learners
    ("gd", None, "K"),
    ("gd:0:eta=0.1", None, "K"),
    ("gd:abc:eta=0.1", None, "K"),
    ("gd:3:eta=nan", None, "eta"),
    ("gd:3:eta=abc", None, "eta"),
    ("gd:3:4", None, "positional"),
    ("gd:3:step=0.1", None, "step"),
    ("gd:3", None, "task"),
    ("pgd:2:eta=0.05", None, "task"),
    ("pgd:2", None, "task"),
    ("gd++:2:eta=0.1", None, "gamma"),
    ("gd++:2:gamma=0.1", None, "gamma"),
    ("gd++:2:eta=0.1:gamma=inf", None, "gamma"),
    ("gd++:2", None, "task"),
    ("debiased_gd:abc", None, "ETA"),
    ("debiased_gd:inf", None, "ETA"),
    ("debiased_gd:1:2", None, "positional"),
    ("debiased_gd:eta=1", None, "eta"),
    ("debiased_gd", None, "task"),
    # nets
    ("relu_net:0", None, "HIDDEN"),
    ("relu_net:abc", None, "HIDDEN"),
    ("relu_net:10:20", None, "positional"),
    ("relu_net:steps=-1", None, "steps"),
    ("relu_net:lr=0", None, "lr"),
    ("relu_net:lr=nan", None, "lr"),
    ("relu_net:seed=-2", None, "seed"),
    ("relu_net:width=3", None, "width"),
    # trees
    ("tree", None, "DEPTH"),
    ("tree:0", None, "DEPTH"),
    ("tree:abc", None, "DEPTH"),
    ("tree:4:5", None, "positional"),
    ("tree:4:lr=1", None, "lr"),
    ("gbt:0", None, "N_ESTIMATORS"),
    ("gbt:10:20", None, "positional"),
    ("gbt:depth=0", None, "depth"),
    ("gbt:lr=-1", None, "lr"),
    ("gbt:subsample=0.5", None, "subsample"),
    # bayes: dMMSE needs a task with a finite pool and noise
    ("dmmse", None, "pool"),
    ("dmmse", _pool_task(pool_size=0), "pool_size = 0"),
    ("dmmse", _pool_task(noise_var=0.0), "SIGMA2"),
    ("dmmse:0", _pool_task(), "SIGMA2"),
    ("dmmse:-1", _pool_task(), "SIGMA2"),
    ("dmmse:abc", _pool_task(), "SIGMA2"),
    ("dmmse:0.1:0.2", _pool_task(), "positional"),
    ("dmmse:foo=1", _pool_task(), "foo"),
]


@pytest.mark.parametrize(("spec", "task", "match"), BAD_SPECS)
def test_bad_learner_specs_are_one_line_errors_with_usage(spec, task, match):
    with pytest.raises(LearnerSpecError, match=match) as info:
        make_learner(spec, task)
    message = str(info.value)
    assert "\n" not in message and "usage:" in message
