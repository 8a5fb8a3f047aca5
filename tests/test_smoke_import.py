import flowscope


def test_version_is_a_string():
    assert flowscope.__version__.count(".") == 2
