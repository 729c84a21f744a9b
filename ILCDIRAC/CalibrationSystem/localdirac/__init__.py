"""Whole-system runs on one machine: a throwaway local DIRAC with the Calibration service, agent
and database (``testbed``, ``mariadb``; with DIRAC's real WMS, ``wms``), a physicist's calibration
on it with emulated samples (``scenario``, ``configurations``) and the same calibration in one
process (``inprocess``).

Used by ``make demo``, the tests and the benchmarks; never shipped to grid workers.
"""
