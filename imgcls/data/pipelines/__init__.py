"""imgcls.data.pipelines."""
