"""What each DVC stage does, one module per stage family (the scripts in stages/ only parse arguments):

* `inputs`: canonical datasets, the prepared model, covariance statistics;
* `probe`: the logit-lens probe of the unedited model;
* `edit`: edit and evaluate (Tables 2-4, KnowEdit, ablations, sweep) and the scaling curve (Fig. 4).

Every runner takes `params` as a params.yaml path or an already-resolved mapping (a profile with
overrides), so benchmarks run exactly the recipe the stages run, in a working directory of their own.
"""
