//! Voice platforms' requests signed, and answers checked, by the platforms' own official
//! libraries (installed by `.ci/run` under `target/connect-libs`):
//! - `retell-sdk`'s `webhook_auth` signs the inbound webhook as Retell does
//!   (https://docs.retellai.com/features/secure-webhook);
//! - `twilio`'s `RequestValidator` signs the incoming-call webhook and each Gather's answer
//!   (https://www.twilio.com/docs/usage/security#validating-requests), and its TwiML classes
//!   write the answer expected (https://www.twilio.com/docs/voice/twiml);
//! - `telnyx`'s `verify_webhook_signature` accepts the Ed25519 signature before Precall
//!   does (https://developers.telnyx.com/docs/inference/ai-assistants/dynamic-variables).
//!
//! The libraries' code runs in Python; the requests go to a real server.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::connect::{connect, connected_agent, crm};
use crate::helpers::spawn_app;

/// The virtualenv with the official libraries, under the target directory.
fn connect_libs_python() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/api-… → target
    let target = exe.ancestors().nth(3).unwrap();
    let python = target.join("connect-libs/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: install retell-sdk, twilio, telnyx and pynacl as .ci/run does",
        python.display()
    );
    python
}

/// Sends each platform's request signed by its own library, and checks the answers: exits
/// non-zero naming what failed.
const WITH_THE_PLATFORMS_LIBRARIES: &str = r#"
import base64, html, json, re, sys, time, urllib.error, urllib.parse, urllib.request
import xml.etree.ElementTree as ET

from nacl.signing import SigningKey
from retell.lib import webhook_auth
from telnyx.lib.webhook_verification import verify_webhook_signature
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

cfg = json.loads(sys.argv[1])

def post(url, body, headers):
    req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

def check(cond, what):
    if not cond:
        sys.exit(what)

# Retell: retell-sdk's own sign(); the answer's dynamic variables are strings.
body = json.dumps({"event": "call_inbound", "call_inbound": {"agent_id": "agent_main",
    "from_number": cfg["retellFrom"], "to_number": "+12125550199"}})
signed = webhook_auth.symmetric["sign"](body, cfg["retellKey"])
check(webhook_auth.verify(body, cfg["retellKey"], signed), "retell-sdk verifies its own signature")
status, text = post(cfg["retellUrl"], body, {"content-type": "application/json", "x-retell-signature": signed})
check(status == 200, f"retell: {status} {text}")
inbound = json.loads(text)["call_inbound"]
check(all(isinstance(v, str) for v in inbound["dynamic_variables"].values()), f"retell strings: {text}")
check(inbound["dynamic_variables"]["customer_name"] == "Ada", f"retell data: {text}")
check(inbound["override_agent_id"] == "agent_main", f"retell agent: {text}")
forged = webhook_auth.symmetric["sign"](body, "another key")
status, text = post(cfg["retellUrl"], body, {"content-type": "application/json", "x-retell-signature": forged})
check(status == 401, f"retell forged: {status} {text}")

# Telnyx: Telnyx's own verification accepts the signature; so does Precall.
key = SigningKey(bytes([5] * 32))
body = json.dumps({"data": {"event_type": "assistant.initialization", "payload": {
    "telnyx_end_user_target": cfg["telnyxFrom"], "telnyx_agent_target": "+12125550199",
    "call_control_id": "v3:libs", "telnyx_conversation_channel": "phone_call"}}})
ts = str(int(time.time()))
headers = {"telnyx-signature-ed25519": base64.b64encode(key.sign(f"{ts}|{body}".encode()).signature).decode(),
           "telnyx-timestamp": ts, "content-type": "application/json"}
verify_webhook_signature(body, headers, cfg["telnyxPublicKey"])
status, text = post(cfg["telnyxUrl"], body, headers)
check(status == 200, f"telnyx: {status} {text}")
variables = json.loads(text)["dynamic_variables"]
check(all(isinstance(v, str) for v in variables.values()), f"telnyx strings: {text}")
check(variables["customer_name"] == "Ada", f"telnyx data: {text}")
other = SigningKey(bytes([6] * 32))
headers["telnyx-signature-ed25519"] = base64.b64encode(other.sign(f"{ts}|{body}".encode()).signature).decode()
try:
    verify_webhook_signature(body, headers, cfg["telnyxPublicKey"])
    sys.exit("telnyx's library took a forged signature")
except Exception:
    pass
status, text = post(cfg["telnyxUrl"], body, headers)
check(status == 401, f"telnyx forged: {status} {text}")

# Twilio: RequestValidator signs the incoming call and each answer; the TwiML is what
# twilio's own classes write.
validator = RequestValidator(cfg["twilioToken"])

def twilio(url, params):
    sig = validator.compute_signature(url, params)
    return post(url, urllib.parse.urlencode(params),
                {"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig})

def tree(xml):
    e = ET.fromstring(xml)
    def walk(n):
        return (n.tag, dict(n.attrib), (n.text or "").strip(), [walk(c) for c in n])
    return walk(e)

def same(got, expected, what):
    check(got.startswith('<?xml version="1.0" encoding="UTF-8"?>'), f"{what}: {got}")
    check(tree(got.encode()) == tree(str(expected).encode()), f"{what}:\n{got}\n{expected}")

def urls(xml):
    action = html.unescape(re.search(r'<Gather action="([^"]+)"', xml).group(1))
    redirect = html.unescape(re.search(r'<Redirect[^>]*>([^<]+)</Redirect>', xml).group(1))
    return action, redirect

call = {"CallSid": "CAlibs", "From": cfg["twilioFrom"], "To": "+12125550199", "AccountSid": "AC1"}
status, text = twilio(cfg["twilioUrl"], call)
check(status == 200, f"twilio: {status} {text}")
action, redirect = urls(text)
r = VoiceResponse()
r.say("Hello Ada.")
g = r.gather(action=action, input="speech dtmf", method="POST")
g.say("How can I help?")
r.redirect(redirect, method="POST")
same(text, r, "the greeting and the first Gather")

status, text = twilio(action, {"CallSid": "CAlibs", "From": cfg["twilioFrom"], "SpeechResult": "my invoice", "Confidence": "0.9"})
check(status == 200, f"twilio answer: {status} {text}")
action, redirect = urls(text)
r = VoiceResponse()
r.say("One more thing.")
g = r.gather(action=action, input="speech dtmf", method="POST")
g.say("When shall we call back?")
r.redirect(redirect, method="POST")
same(text, r, "the Transfer Flow and the second Gather")

status, text = twilio(action, {"CallSid": "CAlibs", "From": cfg["twilioFrom"], "Digits": "9"})
check(status == 200, f"twilio end: {status} {text}")
r = VoiceResponse()
r.say("Thanks, we will call you back about my invoice at 9.")
r.hangup()
same(text, r, "the End Call")

status, text = twilio(cfg["twilioUrl"], {"CallSid": "CAlibs2", "From": cfg["twilioBlocked"], "To": "+12125550199"})
r = VoiceResponse()
r.reject()
same(text, r, "a pre-call End Call")

sig = RequestValidator("another token").compute_signature(cfg["twilioUrl"], call)
status, text = post(cfg["twilioUrl"], urllib.parse.urlencode(call),
                    {"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig})
check(status == 401, f"twilio forged: {status} {text}")
print("ok")
"#;

#[tokio::test]
#[ignore = "needs the retell-sdk, twilio, telnyx and pynacl Python libraries, which .ci/run installs"]
async fn requests_signed_by_the_platforms_official_libraries_are_answered_in_their_formats() {
    let app = spawn_app().await;
    let (agent, hook, key) = connected_agent(&app, 2000);
    let telnyx_public = STANDARD.encode(
        ed25519_dalek::SigningKey::from_bytes(&[5u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    let cfg = json!({
        "retellUrl": connect(&app, &agent, "retell", "key_libs_retell", &[]),
        "retellKey": "key_libs_retell",
        "retellFrom": "+12125550180",
        "telnyxUrl": connect(&app, &agent, "telnyx", &telnyx_public, &[]),
        "telnyxPublicKey": telnyx_public,
        "telnyxFrom": "+12125550181",
        "twilioUrl": connect(&app, &agent, "twilio", "twilio-libs-token", &[]),
        "twilioToken": "twilio-libs-token",
        "twilioFrom": "+12125550182",
        "twilioBlocked": "+12125550183",
    });
    for from in ["+12125550180", "+12125550181", "+12125550182"] {
        crm(
            &app,
            &hook,
            &key,
            &agent,
            from,
            json!({"customer_name": "Ada"}),
        )
        .await;
    }
    crm(
        &app,
        &hook,
        &key,
        &agent,
        "+12125550183",
        json!({"blocked": true}),
    )
    .await;
    let out = tokio::process::Command::new(connect_libs_python())
        .arg("-c")
        .arg(WITH_THE_PLATFORMS_LIBRARIES)
        .arg(cfg.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
