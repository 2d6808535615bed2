"""一网通办 (Shanghai government online service platform): signed JSON REST both ways.

We push case status (办件状态推送) to the platform; the platform calls us back
with the cases customers file on its portal (办件推送).
"""
