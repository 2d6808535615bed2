"""投资项目在线审批监管平台 (investment project approval platform): signed JSON REST.

Fetches the approval (审批), authorisation (核准) or filing (备案) of an
investment project by its 投资项目统一代码, for the 一证办电 dossier.
"""
