"""`asva fetch`: every weight and the dataset the paper's recipe needs, downloaded and checked against pinned
sha256s (``sources``: the table; ``download``: one resumable, verified file; ``cli``: the command)."""
