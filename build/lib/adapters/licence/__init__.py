"""电子证照库 (electronic licence library): business licences over SOAP 1.1 with WS-Security."""
