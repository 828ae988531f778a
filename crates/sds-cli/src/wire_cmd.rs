//! `sds wire …`

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sds_proto::json::{
    channel_result_to_json, decode_error_to_json, message_from_json, message_to_json,
    spec_message_from_json, spec_message_to_json,
};
use sds_proto::repair;
use sds_proto::wire::{nim, spec, Limits, Profile};
use sds_proto::Bytes;
use serde_json::{json, Value};

use crate::CmdResult;

#[derive(Subcommand)]
pub(crate) enum WireCommand {
    /// Decode one message given as hex and print the result as JSON.
    ///
    /// Prints `{"accepted":true,"decoded":{...},"extractChannelId":{...}}` and exits 0, or
    /// `{"accepted":false,"error":{...},"extractChannelId":{...}}` and exits 1. The schema is the
    /// one of the golden vectors (`sds_message_codec.json` for nim-sds, `messages.json` for the
    /// spec profile, whose decoded object adds `class`: `null` for bytes that decode but are no
    /// SDS message).
    Decode(DecodeArgs),
    /// Read one JSON message object from stdin and print its encoding as lower-case hex.
    ///
    /// The object has the form `wire decode` prints for the same profile.
    Encode(EncodeArgs),
    /// Print the SDS-R timing of a repair: {"tReqMs","tRespMs","inGroup"}.
    ///
    /// tReqMs is the delay before `participant` may request `message-id`, tRespMs the delay
    /// before it would rebroadcast it for `sender`, inGroup whether it is in the response group.
    #[command(allow_negative_numbers = true)]
    RepairTiming(RepairTimingArgs),
}

#[derive(Args)]
pub(crate) struct RepairTimingArgs {
    /// Our participant id.
    participant: String,
    /// The original sender of the message.
    sender: String,
    /// The message id.
    message_id: String,
    /// T_min in milliseconds.
    t_min_ms: i64,
    /// T_max in milliseconds.
    t_max_ms: i64,
    /// Number of response groups.
    groups: i64,
    /// Wire profile.
    #[arg(long, default_value = "nim-sds")]
    profile: Profile,
}

#[derive(Args)]
pub(crate) struct DecodeArgs {
    /// The encoded message as hex (whitespace and a leading 0x are ignored), or `-` to read the
    /// hex from stdin.
    input: String,
    /// Wire profile.
    #[arg(long, default_value = "nim-sds")]
    profile: Profile,
    /// Decode without the default size and count limits (1.25 MiB messages, 1 MiB content, 512 history entries,
    /// 64 repair entries, 1 KiB ids and hints).
    #[arg(long)]
    no_limits: bool,
}

#[derive(Args)]
pub(crate) struct EncodeArgs {
    /// Wire profile.
    #[arg(long, default_value = "nim-sds")]
    profile: Profile,
}

pub(crate) fn run(cmd: WireCommand) -> CmdResult {
    match cmd {
        WireCommand::Decode(args) => decode(args),
        WireCommand::Encode(args) => encode(args),
        WireCommand::RepairTiming(args) => repair_timing(args),
    }
}

fn repair_timing(args: RepairTimingArgs) -> CmdResult {
    let (p, s, m) = (
        args.participant.as_bytes(),
        args.sender.as_bytes(),
        args.message_id.as_bytes(),
    );
    let out = match args.profile {
        Profile::NimSds => json!({
            "tReqMs": repair::t_req_offset(p, m, args.t_min_ms, args.t_max_ms),
            "tRespMs": repair::t_resp_offset(p, s, m, args.t_max_ms),
            "inGroup": repair::in_response_group(p, s, m, args.groups),
        }),
        Profile::Spec => {
            let unsigned = |name: &str, v: i64| {
                u64::try_from(v)
                    .map_err(|_| format!("{name} must not be negative on the spec profile"))
            };
            let (t_min, t_max) = (
                unsigned("t-min-ms", args.t_min_ms)?,
                unsigned("t-max-ms", args.t_max_ms)?,
            );
            let groups = unsigned("groups", args.groups)?;
            json!({
                "tReqMs": repair::spec::t_req_offset(p, m, t_min, t_max),
                "tRespMs": repair::spec::t_resp_offset(p, s, m, t_max),
                "inGroup": repair::spec::in_response_group(p, s, m, groups),
            })
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(text)
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = compact
        .strip_prefix("0x")
        .or_else(|| compact.strip_prefix("0X"))
        .unwrap_or(&compact);
    hex::decode(digits).map_err(|e| format!("input is not hex: {e}"))
}

fn decode(args: DecodeArgs) -> CmdResult {
    let text = if args.input == "-" {
        read_stdin()?
    } else {
        args.input
    };
    let bytes = Bytes::from(parse_hex(&text)?);
    let limits = if args.no_limits {
        Limits::unlimited()
    } else {
        Limits::default()
    };
    let (channel, decoded) = match args.profile {
        Profile::NimSds => (
            nim::extract_channel_id(&bytes),
            nim::decode(&bytes, &limits).map(|m| message_to_json(&m)),
        ),
        Profile::Spec => (
            spec::extract_channel_id(&bytes),
            spec::decode(&bytes, &limits).map(|m| spec_message_to_json(&m)),
        ),
    };
    let channel = channel_result_to_json(channel);
    let (out, code) = match decoded {
        Ok(msg) => (
            json!({"accepted": true, "decoded": msg, "extractChannelId": channel}),
            ExitCode::SUCCESS,
        ),
        Err(e) => (
            json!({"accepted": false, "error": decode_error_to_json(&e), "extractChannelId": channel}),
            ExitCode::FAILURE,
        ),
    };
    println!("{out}");
    Ok(code)
}

fn encode(args: EncodeArgs) -> CmdResult {
    let text = read_stdin()?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("stdin is not valid JSON: {e}"))?;
    let invalid = |e| format!("invalid message object: {e}");
    let bytes = match args.profile {
        Profile::NimSds => nim::encode(&message_from_json(&value).map_err(invalid)?),
        Profile::Spec => spec::encode(&spec_message_from_json(&value).map_err(invalid)?),
    };
    println!("{}", hex::encode(bytes));
    Ok(ExitCode::SUCCESS)
}
