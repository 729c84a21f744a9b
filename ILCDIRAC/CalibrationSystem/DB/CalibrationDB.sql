-- CalibrationDB: dirac-install-db creates the database and its grants from this file.
-- The tables are created by the Calibration service itself (SQLAlchemy, ILCDIRAC/CalibrationSystem/DB/CalibrationDB.py)
-- the first time it starts, and only if they are missing.
USE CalibrationDB;
