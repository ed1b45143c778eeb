import numpy as np

from dpbench.synthetic.similarity import normalise_rows


def test_rows_get_unit_norm_and_zero_rows_stay_zero():
    rows = normalise_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_array_equal(normalise_rows(np.zeros((2, 3))), 0)
