"""Errors, secrets, keys and settings: the small parts everything else leans on."""

from __future__ import annotations

import logging

from gateway import errors, logs
from gateway.keys import parse_key
from gateway.redact import Secret, scrub
from gateway.settings import Settings


def test_error_tree_decides_status_and_type_once() -> None:
    cases = [
        (errors.InvalidRequest("x"), 400, "invalid_request_error"),
        (errors.RequestTooLarge("x"), 413, "invalid_request_error"),
        (errors.ModelNotFound("x"), 404, "invalid_request_error"),
        (errors.AuthenticationFailed("x"), 401, "invalid_request_error"),
        (errors.RateLimited("x", retry_after=2.5), 429, "rate_limit_error"),
        (errors.UpstreamError("x"), 502, "api_error"),
        (errors.UpstreamTimeout("x"), 504, "api_error"),
        (errors.UpstreamClientError("x", status=422), 422, "invalid_request_error"),
    ]
    for exc, status, kind in cases:
        assert exc.status == status and exc.to_dict()["error"]["type"] == kind
        assert set(exc.to_dict()["error"]) == {"message", "type", "param", "code"}
    assert errors.RateLimited("x", retry_after=2.5).headers() == {"retry-after": "3", "retry-after-ms": "2500"}
    assert errors.RateLimited("x", retry_after=0.2).headers()["retry-after"] == "1"


def test_secret_redacts_itself_and_scrub_removes_known_values() -> None:
    s = Secret("sk-provider-abcdef123")
    assert "abcdef" not in repr(s) and "abcdef" not in str(s) and "abcdef" not in f"{s}"
    assert scrub("calling with sk-provider-abcdef123 now") == "calling with *** now"
    assert scrub("key sk-gw-0123456789ab_secretsecretsecret") == "key sk-gw-***"


def test_log_lines_are_scrubbed(caplog) -> None:
    Secret("sk-master-should-not-print")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "got %s", ("sk-master-should-not-print",), None)
    line = logs.JsonFormatter().format(record)
    assert "should-not-print" not in line and "***" in line


def test_parse_key() -> None:
    assert parse_key("sk-gw-0123456789ab_" + "s" * 43) == ("0123456789ab", "s" * 43)
    for bad in ("", "sk-gw-", "sk-gw-short_" + "s" * 43, "sk-gw-0123456789ab_short", "Bearer x", "sk-0123"):
        assert parse_key(bad) is None


def test_settings_from_env_and_flags() -> None:
    s = Settings.from_env({"GATEWAY_PORT": "9000", "GATEWAY_MASTER_KEY": "sk-m-123456", "GATEWAY_REDIS_URL": ""},
                          port=None, policy="p.yaml")
    assert s.port == 9000 and s.policy == "p.yaml" and s.redis_url is None
    assert isinstance(s.master_key, Secret) and "123456" not in repr(s)
    assert Settings.from_env({"GATEWAY_PORT": "9000"}, port=7000).port == 7000
    assert Settings.from_env(s.to_env()) == s
