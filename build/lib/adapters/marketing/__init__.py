"""营销系统 (the utility's marketing system): notices over SOAP 1.1 with WS-Security."""
