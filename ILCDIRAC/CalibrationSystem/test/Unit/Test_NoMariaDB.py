"""The unit part runs without MariaDB: its guard refuses every MySQL connection (see conftest)."""
import pytest

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, mysql_url
from ILCDIRAC.CalibrationSystem.localdirac import mariadb
from ILCDIRAC.CalibrationSystem.test.Unit.conftest import MariaDBInUnitTest


def test_a_direct_connection_is_refused():
    with pytest.raises(MariaDBInUnitTest, match="use SQLite, or move it to test/Integration"):
        mariadb.connect()


def test_a_connection_through_sqlalchemy_is_refused():
    url = mysql_url(mariadb.HOST, mariadb.PORT, mariadb.USER, mariadb.PASSWORD, "calibration_unit_guard")
    with pytest.raises(MariaDBInUnitTest):
        CalibrationDB(url)
