"""iLCDirac Calibration: the PandoraPFA calorimeter calibration as a native DIRAC system.

The wheel holds ``ILCDIRAC/CalibrationSystem``: installed into an environment that has iLCDirac,
its files take the place of the older CalibrationSystem shipped inside iLCDirac, so DIRAC resolves
``Calibration/Calibration`` and ``Calibration/CalibrationAgent`` to this project. Beside it, the
separate package ``marlin_emulator`` (a detector-response emulator standing in for Marlin, for
tests, the demo and benchmarks) with its own entry points; it is never shipped to grid workers.
"""
from setuptools import find_packages, setup

SCRIPTS = "ILCDIRAC.CalibrationSystem.scripts"

setup(
    name="ilcdirac-calibration",
    version="0.1.0",
    description="Iterative PandoraPFA calorimeter calibration on DIRAC",
    python_requires=">=3.11",
    packages=find_packages(
        include=["ILCDIRAC.CalibrationSystem", "ILCDIRAC.CalibrationSystem.*", "marlin_emulator"]
    ),
    package_data={
        "ILCDIRAC.CalibrationSystem": ["ConfigTemplate.cfg", "data/*/*", "data/*"],
        "ILCDIRAC.CalibrationSystem.DB": ["*.sql"],
        "marlin_emulator": ["data/*/*", "data/*/*/*"],
    },
    install_requires=[
        "DIRAC>=8.0,<8.1",
        "ILCDIRAC>=35.0,<35.1",
        "numpy",
        "scipy",
        "uproot",
        "boost-histogram",
        "PyYAML",
        "SQLAlchemy>=2",
        "matplotlib",
    ],
    entry_points={
        "console_scripts": [
            f"dirac-clic-calibration-submit = {SCRIPTS}.dirac_clic_calibration_submit:main",
            f"dirac-clic-calibration-status = {SCRIPTS}.dirac_clic_calibration_status:main",
            f"dirac-clic-calibration-worker = {SCRIPTS}.dirac_clic_calibration_worker:main",
            f"dirac-clic-calibration-results = {SCRIPTS}.dirac_clic_calibration_results:main",
            f"dirac-clic-calibration-kill = {SCRIPTS}.dirac_clic_calibration_kill:main",
            "marlin-emulator = marlin_emulator.cli:main",
            "marlin-emulator-samples = marlin_emulator.cli:samples_main",
        ],
    },
)
