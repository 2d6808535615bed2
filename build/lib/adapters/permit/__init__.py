"""占掘路行政审批 (road occupation and excavation permit platform): signed JSON REST.

Files the permit application for a connection's external works; the road
authority decides later and posts its decision back as a signed callback.
"""
