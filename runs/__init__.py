"""Mining runs: the OUT folder and the stages that fill it, as plain functions.

:class:`runs.folder.RunFolder` owns the OUT layout and where a run stands;
:mod:`runs.seeds`, :mod:`runs.stages` and :mod:`runs.report` are the stages a
run goes through, and :mod:`runs.refilter` walks the same staging path over a
finished run. The Prefect flows in ``flows/`` only arrange these.
"""
