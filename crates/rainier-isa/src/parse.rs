//! Text assembly parser. Grammar (one statement per line, `#` starts a comment):
//!
//! ```text
//! decl     := 'hbm' NAME ':' DTYPE '[' INT (',' INT)* ']' ('input' | 'output' | 'scratch')
//! instr    := OPCODE operand (',' operand)* (NAME '=' value | 'S[' INT ']>=' INT | 'S[' INT ']++')*
//! operand  := tile | hbm
//! tile     := ('sb' | 'ps') '[' INT ':' INT ']' '@' INT ':' DTYPE pattern
//! pattern  := '[' INT (',' INT)* ']'                     # sizes, row-major contiguous
//!           | '[' '[' INT ',' INT ']' (',' ...)* ']'     # [stride, size] pairs (NKI order)
//! hbm      := NAME                                       # the whole tensor
//!           | NAME '[' slice (',' slice)* ']'            # slice := INT | INT? ':' INT?
//!           | NAME '@' INT pattern                       # element offset + explicit pattern
//! value    := NUMBER | NAME | tile | '[' INT (',' INT)* ']'
//! ```

use std::fmt;

use rainier_tensor::DType;

use crate::table::opcode;
use crate::{
    contiguous_dims, ActFunc, Affine, AluOp, Dim, DmaOperand, Engine, HbmAccess, Instruction,
    Memory, Op, Program, ReduceOp, ScalarOperand, ScalarStage, SemWait, TensorDecl, TensorKind,
    Tile, DMA_QUEUES,
};

/// A syntax error with its 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// Numeric literal text (integer or float).
    Num(String),
    Punct(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) | Tok::Num(s) => write!(f, "'{s}'"),
            Tok::Punct(p) => write!(f, "'{p}'"),
        }
    }
}

const PUNCTS: [&str; 11] = [">=", "++", "[", "]", ":", ",", "@", "=", "-", "(", ")"];

fn lex(line: &str, lineno: u32) -> Result<Vec<(Tok, u32)>, ParseError> {
    let code = line.split('#').next().unwrap_or("");
    let chars: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i as u32 + 1;
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || ((c == '-' || c == '+' || c == '.') && next.is_some_and(|n| n.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                let after_exp = matches!(chars[i - 1], 'e' | 'E')
                    && !chars[start..i].iter().any(|&x| x == 'x' || x == 'X');
                if d.is_ascii_alphanumeric()
                    || d == '.'
                    || d == '_'
                    || ((d == '-' || d == '+') && after_exp)
                {
                    i += 1;
                } else {
                    break;
                }
            }
            toks.push((Tok::Num(chars[start..i].iter().collect()), col));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            toks.push((Tok::Ident(chars[start..i].iter().collect()), col));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let p = PUNCTS.iter().find(|p| rest.starts_with(**p)).ok_or_else(|| ParseError {
                line: lineno,
                column: col,
                message: format!("unexpected character '{c}'"),
            })?;
            toks.push((Tok::Punct(p), col));
            i += p.len();
        }
    }
    Ok(toks)
}

/// A parsed option value.
#[derive(Debug, Clone)]
enum Value {
    Num(String),
    Ident(String),
    Tile(Tile),
    List(Vec<i64>),
}

struct Cursor<'a> {
    toks: &'a [(Tok, u32)],
    pos: usize,
    line: u32,
    end_col: u32,
}

impl<'a> Cursor<'a> {
    fn col(&self) -> u32 {
        self.toks.get(self.pos).map_or(self.end_col, |t| t.1)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(self.err_at(self.col(), message))
    }

    fn err_at(&self, column: u32, message: impl Into<String>) -> ParseError {
        ParseError { line: self.line, column, message: message.into() }
    }

    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn peek2(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos + 1).map(|t| &t.0)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if self.is_punct(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn found(&self) -> String {
        self.peek().map_or("end of line".to_string(), |t| t.to_string())
    }

    fn expect_punct(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            self.err(format!("expected '{p}', found {}", self.found()))
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            _ => self.err(format!("expected {what}, found {}", self.found())),
        }
    }

    fn int(&mut self, what: &str) -> Result<i64, ParseError> {
        let col = self.col();
        match self.peek() {
            Some(Tok::Num(s)) => {
                self.pos += 1;
                parse_int(s).ok_or_else(|| {
                    self.err_at(col, format!("{what} must be an integer, found '{s}'"))
                })
            }
            _ => self.err(format!("expected {what} (an integer), found {}", self.found())),
        }
    }

    fn int_in<T: TryFrom<i64>>(&mut self, what: &str, lo: i64, hi: i64) -> Result<T, ParseError> {
        let col = self.col();
        let v = self.int(what)?;
        if v < lo || v > hi {
            return Err(self.err_at(col, format!("{what} {v} is out of range [{lo}, {hi}]")));
        }
        T::try_from(v).map_err(|_| self.err_at(col, format!("{what} {v} is out of range")))
    }

    fn dtype(&mut self) -> Result<DType, ParseError> {
        let col = self.col();
        let name = self.ident("a dtype")?;
        name.parse().map_err(|e: rainier_tensor::UnknownDType| self.err_at(col, e.to_string()))
    }
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let body = body.replace('_', "");
    let v = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => body.parse::<i64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// Limits that keep parsed numbers away from arithmetic overflow; the verifier applies the
/// hardware's much smaller limits.
const MAX_SIZE: i64 = 1 << 40;
const MAX_STRIDE: i64 = 1 << 40;

fn pattern(c: &mut Cursor<'_>) -> Result<Vec<Dim>, ParseError> {
    c.expect_punct("[")?;
    let mut dims = Vec::new();
    if c.is_punct("[") {
        loop {
            c.expect_punct("[")?;
            let stride = c.int_in("stride", -MAX_STRIDE, MAX_STRIDE)?;
            c.expect_punct(",")?;
            let size = c.int_in("size", 0, MAX_SIZE)?;
            c.expect_punct("]")?;
            dims.push(Dim { stride, size });
            if !c.eat_punct(",") {
                break;
            }
        }
    } else {
        let mut sizes = Vec::new();
        loop {
            sizes.push(c.int_in::<u64>("size", 0, MAX_SIZE)?);
            if !c.eat_punct(",") {
                break;
            }
        }
        dims = contiguous_dims(&sizes);
    }
    c.expect_punct("]")?;
    Ok(dims)
}

fn tile(c: &mut Cursor<'_>) -> Result<Tile, ParseError> {
    let memory = match c.ident("'sb' or 'ps'")?.as_str() {
        "sb" => Memory::Sbuf,
        "ps" => Memory::Psum,
        other => return c.err(format!("expected 'sb' or 'ps', found '{other}'")),
    };
    c.expect_punct("[")?;
    let col = c.col();
    let start: u32 = c.int_in("start partition", 0, 1 << 20)?;
    c.expect_punct(":")?;
    let end: u32 = c.int_in("end partition", 0, 1 << 20)?;
    if end < start {
        return Err(c.err_at(col, format!("partition range {start}:{end} is reversed")));
    }
    c.expect_punct("]")?;
    c.expect_punct("@")?;
    let offset_bytes = c.int_in("byte offset", 0, MAX_SIZE)?;
    c.expect_punct(":")?;
    let dtype = c.dtype()?;
    let dims = pattern(c)?;
    Ok(Tile { memory, start_partition: start, partitions: end - start, offset_bytes, dtype, dims })
}

fn is_tile_start(c: &Cursor<'_>) -> bool {
    matches!(c.peek(), Some(Tok::Ident(s)) if s == "sb" || s == "ps")
        && matches!(c.peek2(), Some(Tok::Punct("[")))
}

fn hbm(c: &mut Cursor<'_>, tensors: &[TensorDecl]) -> Result<HbmAccess, ParseError> {
    let col = c.col();
    let name = c.ident("an operand")?;
    let (tensor, decl) =
        tensors.iter().enumerate().find(|(_, t)| t.name == name).ok_or_else(|| {
            c.err_at(
                col,
                format!(
                    "unknown HBM tensor '{name}' (declare it with 'hbm {name}: DTYPE[...] input')"
                ),
            )
        })?;
    let full = contiguous_dims(&decl.shape);
    if c.eat_punct("@") {
        let offset = c.int_in("element offset", 0, MAX_SIZE)?;
        let dims = pattern(c)?;
        return Ok(HbmAccess { tensor, offset, dims });
    }
    if !c.eat_punct("[") {
        return Ok(HbmAccess { tensor, offset: 0, dims: full });
    }
    let mut offset = 0u64;
    let mut dims = Vec::new();
    let mut axis = 0;
    loop {
        let col = c.col();
        let Some(d) = full.get(axis) else {
            return Err(
                c.err_at(col, format!("'{name}' has {} dims; too many indices", full.len()))
            );
        };
        let start = if c.is_punct(":") { 0 } else { c.int_in::<u64>("index", 0, MAX_SIZE)? };
        if c.eat_punct(":") {
            let end = if c.is_punct(",") || c.is_punct("]") {
                d.size
            } else {
                c.int_in::<u64>("slice end", 0, MAX_SIZE)?
            };
            if start > end || end > d.size {
                return Err(c.err_at(
                    col,
                    format!(
                        "slice {start}:{end} is outside dim {axis} of '{name}' (size {})",
                        d.size
                    ),
                ));
            }
            dims.push(Dim { stride: d.stride, size: end - start });
        } else if start >= d.size {
            return Err(c.err_at(
                col,
                format!("index {start} is outside dim {axis} of '{name}' (size {})", d.size),
            ));
        }
        offset += start * d.stride as u64;
        axis += 1;
        if !c.eat_punct(",") {
            break;
        }
    }
    c.expect_punct("]")?;
    dims.extend_from_slice(&full[axis..]);
    if dims.is_empty() {
        dims.push(Dim { stride: 1, size: 1 });
    }
    Ok(HbmAccess { tensor, offset, dims })
}

fn value(c: &mut Cursor<'_>) -> Result<Value, ParseError> {
    if is_tile_start(c) {
        return Ok(Value::Tile(tile(c)?));
    }
    if c.eat_punct("[") {
        let mut v = Vec::new();
        if !c.is_punct("]") {
            loop {
                v.push(c.int_in("list element", -MAX_STRIDE, MAX_STRIDE)?);
                if !c.eat_punct(",") {
                    break;
                }
            }
        }
        c.expect_punct("]")?;
        return Ok(Value::List(v));
    }
    if c.eat_punct("-") {
        let id = c.ident("a number")?;
        return Ok(Value::Num(format!("-{id}")));
    }
    match c.peek() {
        Some(Tok::Num(s)) => {
            c.pos += 1;
            Ok(Value::Num(s.clone()))
        }
        Some(Tok::Ident(s)) => {
            c.pos += 1;
            Ok(Value::Ident(s.clone()))
        }
        _ => c.err(format!("expected a value, found {}", c.found())),
    }
}

/// The `key=value` options of one instruction, consumed by name.
struct Options {
    items: Vec<(String, Value, u32)>,
    line: u32,
}

impl Options {
    fn err(&self, col: u32, message: String) -> ParseError {
        ParseError { line: self.line, column: col, message }
    }

    fn take(&mut self, key: &str) -> Option<(Value, u32)> {
        let i = self.items.iter().position(|(k, _, _)| k == key)?;
        let (_, v, col) = self.items.remove(i);
        Some((v, col))
    }

    fn f32(&mut self, key: &str) -> Result<Option<f32>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some((Value::Num(s), col)) => match s.parse::<f32>() {
                // A finite literal beyond fp32's range would silently become inf.
                Ok(v) if v.is_infinite() && !s.to_ascii_lowercase().contains("inf") => Err(self
                    .err(
                        col,
                        format!(
                            "{key}: {s} is beyond fp32's range (±3.4e38; write inf for infinity)"
                        ),
                    )),
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(self.err(col, format!("{key}: '{s}' is not a number"))),
            },
            Some((Value::Ident(s), col)) => {
                let v = match s.to_ascii_lowercase().as_str() {
                    "inf" => f32::INFINITY,
                    "nan" => f32::NAN,
                    _ => return Err(self.err(col, format!("{key}: '{s}' is not a number"))),
                };
                Ok(Some(v))
            }
            Some((_, col)) => Err(self.err(col, format!("{key} must be a number"))),
        }
    }

    fn required_f32(&mut self, key: &str, col: u32) -> Result<f32, ParseError> {
        self.f32(key)?.ok_or_else(|| self.err(col, format!("missing option {key}=NUMBER")))
    }

    fn int(&mut self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some((Value::Num(s), col)) => match parse_int(&s) {
                Some(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
                Some(v) => Err(self.err(col, format!("{key}={v} is out of range [{lo}, {hi}]"))),
                None => Err(self.err(col, format!("{key} must be an integer, found '{s}'"))),
            },
            Some((_, col)) => Err(self.err(col, format!("{key} must be an integer"))),
        }
    }

    /// A required `key=ALU_OP`.
    fn required_alu(&mut self, key: &str, op_col: u32) -> Result<AluOp, ParseError> {
        self.alu(key)?.ok_or_else(|| self.err(op_col, format!("missing option {key}=ALU_OP")))
    }

    /// A required `key=IMM|TILE`.
    fn required_scalar(&mut self, key: &str, op_col: u32) -> Result<ScalarOperand, ParseError> {
        self.scalar(key)?.ok_or_else(|| self.err(op_col, format!("missing option {key}=IMM|TILE")))
    }

    /// A required `key=add|max|min`.
    fn reduce_op(&mut self, key: &str, op_col: u32) -> Result<ReduceOp, ParseError> {
        let (w, col) = self
            .word(key)?
            .ok_or_else(|| self.err(op_col, format!("missing option {key}=add|max|min")))?;
        ReduceOp::ALL
            .into_iter()
            .find(|o| o.name() == w)
            .ok_or_else(|| self.err(col, format!("unknown reduce op '{w}' (known: add, max, min)")))
    }

    /// `reduce_cmd=idle|reset|reduce|reset_reduce` (default idle).
    fn reduce_cmd(&mut self) -> Result<crate::ReduceCmd, ParseError> {
        match self.word("reduce_cmd")? {
            None => Ok(crate::ReduceCmd::Idle),
            Some((w, col)) => {
                crate::ReduceCmd::ALL.into_iter().find(|c| c.name() == w).ok_or_else(|| {
                    self.err(
                        col,
                        format!(
                            "unknown reduce_cmd '{w}' (known: idle, reset, reduce, reset_reduce)"
                        ),
                    )
                })
            }
        }
    }

    fn bool(&mut self, key: &str) -> Result<bool, ParseError> {
        match self.take(key) {
            None => Ok(false),
            Some((Value::Ident(s), _)) if s == "true" => Ok(true),
            Some((Value::Ident(s), _)) if s == "false" => Ok(false),
            Some((_, col)) => Err(self.err(col, format!("{key} must be true or false"))),
        }
    }

    fn word(&mut self, key: &str) -> Result<Option<(String, u32)>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some((Value::Ident(s), col)) => Ok(Some((s, col))),
            Some((_, col)) => Err(self.err(col, format!("{key} must be a name"))),
        }
    }

    fn alu(&mut self, key: &str) -> Result<Option<AluOp>, ParseError> {
        let Some((w, col)) = self.word(key)? else { return Ok(None) };
        AluOp::ALL.into_iter().find(|o| o.name() == w).map(Some).ok_or_else(|| {
            let known: Vec<&str> = AluOp::ALL.iter().map(|o| o.name()).collect();
            self.err(col, format!("unknown {key} '{w}' (known: {})", known.join(", ")))
        })
    }

    fn tile(&mut self, key: &str) -> Result<Option<Tile>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some((Value::Tile(t), _)) => Ok(Some(t)),
            Some((_, col)) => Err(self.err(col, format!("{key} must be a tile (sb[...]@...)"))),
        }
    }

    fn scalar(&mut self, key: &str) -> Result<Option<ScalarOperand>, ParseError> {
        if let Some(t) = self.tile_if(key) {
            return Ok(Some(ScalarOperand::Vector(t)));
        }
        Ok(self.f32(key)?.map(ScalarOperand::Imm))
    }

    fn tile_if(&mut self, key: &str) -> Option<Tile> {
        let i = self.items.iter().position(|(k, v, _)| k == key && matches!(v, Value::Tile(_)))?;
        match self.items.remove(i).1 {
            Value::Tile(t) => Some(t),
            _ => None,
        }
    }

    fn affine(&mut self, col: u32) -> Result<Affine, ParseError> {
        let base = self.int("base", i32::MIN.into(), i32::MAX.into())?.unwrap_or(0) as i32;
        let cm =
            self.int("channel_multiplier", i32::MIN.into(), i32::MAX.into())?.unwrap_or(0) as i32;
        let steps = match self.take("steps") {
            Some((Value::List(v), col)) => v
                .into_iter()
                .map(|s| {
                    i32::try_from(s)
                        .map_err(|_| self.err(col, format!("step {s} is out of int32 range")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some((_, col)) => return Err(self.err(col, "steps must be a list [INT, ...]".into())),
            None => return Err(self.err(col, "missing option steps=[INT, ...]".into())),
        };
        Ok(Affine { base, channel_multiplier: cm, steps })
    }

    fn finish(self, op: &str) -> Result<(), ParseError> {
        match self.items.first() {
            None => Ok(()),
            Some((k, _, col)) => {
                let accepted = opcode(op).map_or("", |o| o.options);
                let hint =
                    if accepted.is_empty() { "none".to_string() } else { accepted.to_string() };
                Err(self.err(*col, format!("{op} does not take option '{k}' (accepted: {hint})")))
            }
        }
    }
}

fn declaration(c: &mut Cursor<'_>, tensors: &[TensorDecl]) -> Result<TensorDecl, ParseError> {
    let col = c.col();
    let name = c.ident("a tensor name")?;
    if matches!(name.as_str(), "sb" | "ps" | "S" | "hbm") || opcode(&name).is_some() {
        return Err(c.err_at(col, format!("'{name}' is reserved and cannot name a tensor")));
    }
    if tensors.iter().any(|t| t.name == name) {
        return Err(c.err_at(col, format!("tensor '{name}' is declared twice")));
    }
    c.expect_punct(":")?;
    let dtype = c.dtype()?;
    c.expect_punct("[")?;
    let mut shape = Vec::new();
    loop {
        shape.push(c.int_in::<u64>("dimension", 1, MAX_SIZE)?);
        if !c.eat_punct(",") {
            break;
        }
    }
    c.expect_punct("]")?;
    let col = c.col();
    let kind = match c.ident("'input', 'output' or 'scratch'")?.as_str() {
        "input" => TensorKind::Input,
        "output" => TensorKind::Output,
        "scratch" => TensorKind::Scratch,
        other => {
            return Err(
                c.err_at(col, format!("expected 'input', 'output' or 'scratch', found '{other}'"))
            )
        }
    };
    let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if elems.is_none_or(|n| n.saturating_mul(dtype.size_bytes() as u64) > 1 << 40) {
        return Err(c.err_at(col, format!("tensor '{name}' is larger than 1 TiB")));
    }
    if !c.at_end() {
        return c.err(format!("unexpected {} after the declaration", c.found()));
    }
    Ok(TensorDecl { name, dtype, shape, kind })
}

fn operand_count(op: &str) -> usize {
    match op {
        "memset" | "iota" => 1,
        "nc_matmul"
        | "tensor_tensor"
        | "tensor_tensor_scan"
        | "scalar_tensor_tensor"
        | "nc_find_index8"
        | "select_reduce"
        | "local_gather"
        | "dma_indirect"
        | "nc_match_replace8"
        | "quantize_mx"
        | "gather" => 3,
        "select" | "range_select" => 4,
        "nc_matmul_mx" => 5,
        _ => 2,
    }
}

fn instruction(c: &mut Cursor<'_>, tensors: &[TensorDecl]) -> Result<Instruction, ParseError> {
    let op_col = c.col();
    let name = c.ident("an instruction")?;
    let info = opcode(&name).ok_or_else(|| {
        let known: Vec<&str> = crate::OPCODES.iter().map(|o| o.name).collect();
        c.err_at(op_col, format!("unknown instruction '{name}' (known: {})", known.join(", ")))
    })?;
    let n = operand_count(&name);
    let mut tiles = Vec::new();
    let mut dma = Vec::new();
    for i in 0..n {
        if i > 0 {
            c.expect_punct(",").map_err(|_| {
                c.err_at(
                    c.col(),
                    format!("{name} takes {n} operands ({}); found {i}", info.operands),
                )
            })?;
        }
        if c.at_end() {
            return c.err(format!("{name} takes {n} operands ({}); found {i}", info.operands));
        }
        if name == "dma_copy" || (name == "dma_indirect" && i < 2) {
            dma.push(if is_tile_start(c) {
                DmaOperand::Tile(tile(c)?)
            } else {
                DmaOperand::Hbm(hbm(c, tensors)?)
            });
        } else if is_tile_start(c) {
            tiles.push(tile(c)?);
        } else {
            return c.err(format!(
                "{name} operand {} must be an SBUF or PSUM tile (sb[...] or ps[...]), found {}",
                i + 1,
                c.found()
            ));
        }
    }
    if c.is_punct(",") {
        return c.err(format!("{name} takes {n} operands ({})", info.operands));
    }
    // Options, waits and signals.
    let mut opts = Options { items: Vec::new(), line: c.line };
    let mut waits = Vec::new();
    let mut signals = Vec::new();
    while !c.at_end() {
        let col = c.col();
        if matches!(c.peek(), Some(Tok::Ident(s)) if s == "S")
            && matches!(c.peek2(), Some(Tok::Punct("[")))
        {
            c.pos += 2;
            let semaphore: u32 = c.int_in("semaphore", 0, i64::from(u32::MAX))?;
            c.expect_punct("]")?;
            if c.eat_punct(">=") {
                let value: u32 = c.int_in("semaphore value", 0, i64::from(u32::MAX))?;
                waits.push(SemWait { semaphore, value });
            } else if c.eat_punct("++") {
                signals.push(semaphore);
            } else {
                return c.err(format!(
                    "expected '>=' or '++' after S[{semaphore}], found {}",
                    c.found()
                ));
            }
            continue;
        }
        let key = c.ident("an option (key=value) or a semaphore (S[i]>=v, S[i]++)")?;
        c.expect_punct("=")?;
        if opts.items.iter().any(|(k, _, _)| *k == key) {
            return Err(c.err_at(col, format!("option '{key}' is given twice")));
        }
        let v = value(c)?;
        opts.items.push((key, v, col));
    }
    let engine = match opts.word("engine")? {
        None => info.engines[0],
        Some((e, col)) => {
            let engine = Engine::from_name(&e).ok_or_else(|| {
                opts.err(
                    col,
                    format!("unknown engine '{e}' (known: sync, tensor, vector, scalar, gpsimd)"),
                )
            })?;
            if !info.engines.contains(&engine) {
                let ok: Vec<&str> = info.engines.iter().map(|e| e.name()).collect();
                return Err(opts.err(
                    col,
                    format!("{name} cannot run on the {e} engine (allowed: {})", ok.join(", ")),
                ));
            }
            engine
        }
    };
    let mut t = tiles.into_iter();
    let mut next = || t.next().unwrap_or_else(|| Tile::new(Memory::Sbuf, 0..0, 0, DType::F32, &[]));
    let op = match name.as_str() {
        "dma_copy" => {
            let mut d = dma.into_iter();
            let (Some(dst), Some(src)) = (d.next(), d.next()) else {
                return Err(opts.err(op_col, "dma_copy takes dst, src".into()));
            };
            Op::DmaCopy {
                dst,
                src,
                queue: opts.int("queue", 0, DMA_QUEUES - 1)?.unwrap_or(0) as u8,
            }
        }
        "nc_matmul" => Op::Matmul {
            dst: next(),
            stationary: next(),
            moving: next(),
            accumulate: opts.bool("accumulate")?,
            double_row: opts.bool("double_row")?,
        },
        "nc_matmul_mx" => Op::MatmulMx {
            dst: next(),
            stationary: next(),
            moving: next(),
            stationary_scale: next(),
            moving_scale: next(),
            accumulate: opts.bool("accumulate")?,
        },
        "quantize_mx" => Op::QuantizeMx { dst: next(), src: next(), scale: next() },
        "dma_transpose" => Op::DmaTranspose {
            dst: next(),
            src: next(),
            queue: opts.int("queue", 0, DMA_QUEUES - 1)?.unwrap_or(0) as u8,
        },
        "nc_transpose" => Op::Transpose { dst: next(), src: next() },
        "tensor_tensor" => {
            let (dst, in0, in1) = (next(), next(), next());
            let op = opts
                .alu("op")?
                .ok_or_else(|| opts.err(op_col, "missing option op=ALU_OP".into()))?;
            Op::TensorTensor { dst, in0, in1, op }
        }
        "tensor_scalar" => {
            let (dst, src) = (next(), next());
            let mut stages = Vec::new();
            for i in 0..2 {
                let op = opts.alu(&format!("op{i}"))?;
                let operand = opts.scalar(&format!("operand{i}"))?;
                let reverse = opts.bool(&format!("reverse{i}"))?;
                match (op, operand) {
                    (Some(op), Some(operand)) => stages.push(ScalarStage { op, operand, reverse }),
                    (None, None) if i == 1 => {}
                    _ => {
                        return Err(opts.err(
                            op_col,
                            format!("tensor_scalar needs both op{i}= and operand{i}="),
                        ))
                    }
                }
            }
            Op::TensorScalar { dst, src, stages }
        }
        "tensor_reduce" => {
            let (dst, src) = (next(), next());
            let op = opts.reduce_op("op", op_col)?;
            let axes = opts.int("axes", 1, 4)?.map_or(src.dims.len() as u32, |a| a as u32);
            Op::TensorReduce { dst, src, op, axes, negate: opts.bool("negate")? }
        }
        "tensor_copy" => Op::TensorCopy { dst: next(), src: next() },
        "tensor_tensor_scan" => {
            let (dst, in0, in1) = (next(), next(), next());
            let (op0, op1) = (opts.required_alu("op0", op_col)?, opts.required_alu("op1", op_col)?);
            let initial = opts.required_scalar("initial", op_col)?;
            Op::TensorTensorScan {
                dst,
                in0,
                in1,
                initial,
                op0,
                op1,
                reverse0: opts.bool("reverse0")?,
                reverse1: opts.bool("reverse1")?,
            }
        }
        "bn_stats" => Op::BnStats { dst: next(), src: next() },
        "max8" => Op::Max8 { dst: next(), src: next() },
        "gather" => Op::Gather { dst: next(), src: next(), index: next() },
        "sequence_bounds" => Op::SequenceBounds { dst: next(), src: next() },
        "exponential" => {
            let (dst, src) = (next(), next());
            let max = opts.scalar("max")?.unwrap_or(ScalarOperand::Imm(0.0));
            let reduce_cmd = match opts.word("reduce_cmd")? {
                None => crate::ReduceCmd::Idle,
                Some((w, col)) => {
                    crate::ReduceCmd::ALL.into_iter().find(|c| c.name() == w).ok_or_else(|| {
                        let known: Vec<&str> =
                            crate::ReduceCmd::ALL.iter().map(|c| c.name()).collect();
                        opts.err(
                            col,
                            format!("unknown reduce_cmd '{w}' (known: {})", known.join(", ")),
                        )
                    })?
                }
            };
            let init = opts.scalar("init")?;
            let reduce = opts.tile("reduce")?;
            Op::Exponential { dst, src, max, reduce_cmd, init, reduce }
        }
        "dropout" => {
            let (dst, src) = (next(), next());
            let prob = opts.required_scalar("prob", op_col)?;
            let seed = opts.int("seed", 0, i64::from(u32::MAX))?.unwrap_or(0) as u32;
            Op::Dropout { dst, src, prob, seed }
        }
        "nc_match_replace8" => {
            let (dst, data, vals) = (next(), next(), next());
            let imm = opts.required_f32("imm", op_col)?;
            Op::MatchReplace8 { dst, data, vals, imm, indices: opts.tile("indices")? }
        }
        "nc_stream_shuffle" => {
            let (dst, src) = (next(), next());
            let mask = match opts.take("mask") {
                Some((Value::List(v), col)) => v
                    .into_iter()
                    .map(|m| {
                        u8::try_from(m)
                            .map_err(|_| opts.err(col, format!("mask entry {m} is not 0..=255")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some((_, col)) => {
                    return Err(opts.err(col, "mask must be a list [INT, ...]".into()))
                }
                None => return Err(opts.err(op_col, "missing option mask=[INT x 32]".into())),
            };
            Op::StreamShuffle { dst, src, mask }
        }
        "tensor_scalar_cumulative" => {
            let (dst, src) = (next(), next());
            let (op0, op1) = (opts.required_alu("op0", op_col)?, opts.required_alu("op1", op_col)?);
            let operand0 = opts.required_scalar("operand0", op_col)?;
            let reverse0 = opts.bool("reverse0")?;
            let reduce_cmd = match opts.word("reduce_cmd")? {
                None => crate::ReduceCmd::ResetReduce,
                Some((w, col)) => crate::ReduceCmd::ALL.into_iter().find(|c| c.name() == w).ok_or_else(|| {
                    opts.err(col, format!("unknown reduce_cmd '{w}' (known: reset_reduce, reduce, load_reduce)"))
                })?,
            };
            let init = opts.scalar("init")?;
            Op::TensorScalarCumulative { dst, src, op0, operand0, reverse0, op1, reduce_cmd, init }
        }
        "dma_indirect" => {
            let mut d = dma.into_iter();
            let (Some(dst), Some(src)) = (d.next(), d.next()) else {
                return Err(opts.err(op_col, "dma_indirect takes dst, src, index".into()));
            };
            let oob_skip = match opts.word("oob")? {
                None => false,
                Some((w, _)) if w == "error" => false,
                Some((w, _)) if w == "skip" => true,
                Some((w, col)) => {
                    return Err(opts.err(col, format!("unknown oob '{w}' (known: error, skip)")))
                }
            };
            let rows = opts.int("rows", 0, i64::from(u32::MAX))?.unwrap_or(0) as u32;
            Op::DmaIndirect {
                rows,
                queue: opts.int("queue", 0, DMA_QUEUES - 1)?.unwrap_or(0) as u8,
                dst,
                src,
                index: next(),
                oob_skip,
                accumulate: opts.bool("accumulate")?,
            }
        }
        "tensor_partition_reduce" => {
            let (dst, src) = (next(), next());
            let op = opts.reduce_op("op", op_col)?;
            Op::PartitionReduce { dst, src, op }
        }
        "local_gather" => {
            let (dst, src, index) = (next(), next(), next());
            let elems = opts.int("elems", 1, 32)?.unwrap_or(1) as u32;
            let valid = opts
                .int("valid", 1, 1 << 20)?
                .ok_or_else(|| opts.err(op_col, "missing option valid=INT".into()))?
                as u32;
            Op::LocalGather { dst, src, index, elems, valid }
        }
        "range_select" => {
            let (dst, src, bound0, bound1) = (next(), next(), next(), next());
            let (cmp0, cmp1) =
                (opts.required_alu("cmp0", op_col)?, opts.required_alu("cmp1", op_col)?);
            let range_start = opts
                .int("range_start", i64::from(i32::MIN), i64::from(i32::MAX))?
                .unwrap_or(0) as i32;
            let on_false = opts.f32("on_false")?.unwrap_or(f32::MIN);
            let reduce_cmd = opts.reduce_cmd()?;
            let reduce = opts.tile("reduce")?;
            Op::RangeSelect {
                dst,
                src,
                bound0,
                bound1,
                cmp0,
                cmp1,
                range_start,
                on_false,
                reduce_cmd,
                reduce,
            }
        }
        "select_reduce" => {
            let (dst, predicate, on_true) = (next(), next(), next());
            let on_false = opts.required_scalar("on_false", op_col)?;
            let reverse = opts.bool("reverse")?;
            let reduce_cmd = opts.reduce_cmd()?;
            let reduce = opts.tile("reduce")?;
            Op::SelectReduce { dst, predicate, on_true, on_false, reverse, reduce_cmd, reduce }
        }
        "reciprocal" => Op::Reciprocal { dst: next(), src: next() },
        "nc_find_index8" => Op::FindIndex8 { dst: next(), data: next(), vals: next() },
        "scalar_tensor_tensor" => {
            let (dst, src, in1) = (next(), next(), next());
            let (op0, op1) = (opts.required_alu("op0", op_col)?, opts.required_alu("op1", op_col)?);
            let operand0 = opts.required_scalar("operand0", op_col)?;
            Op::ScalarTensorTensor {
                dst,
                src,
                operand0,
                in1,
                op0,
                op1,
                reverse0: opts.bool("reverse0")?,
                reverse1: opts.bool("reverse1")?,
            }
        }
        "tensor_scalar_reduce" => {
            let (dst, src) = (next(), next());
            let op0 = opts
                .alu("op0")?
                .ok_or_else(|| opts.err(op_col, "missing option op0=ALU_OP".into()))?;
            let operand0 = opts.required_scalar("operand0", op_col)?;
            let reduce_op = opts.reduce_op("reduce_op", op_col)?;
            let reduce = opts
                .tile("reduce")?
                .ok_or_else(|| opts.err(op_col, "missing option reduce=TILE".into()))?;
            Op::TensorScalarReduce {
                dst,
                src,
                op0,
                operand0,
                reverse0: opts.bool("reverse0")?,
                reduce_op,
                reduce,
            }
        }
        "bn_aggr" => Op::BnAggr { dst: next(), src: next() },
        "memset" => Op::Memset { dst: next(), value: opts.required_f32("value", op_col)? },
        "select" => {
            Op::Select { dst: next(), predicate: next(), on_true: next(), on_false: next() }
        }
        "activation" => {
            let (dst, src) = (next(), next());
            let (w, col) = opts
                .word("func")?
                .ok_or_else(|| opts.err(op_col, "missing option func=ACT_FUNC".into()))?;
            let func = ActFunc::from_name(&w).ok_or_else(|| {
                let known: Vec<&str> = ActFunc::ALL.iter().map(|f| f.name()).collect();
                opts.err(
                    col,
                    format!("unknown activation function '{w}' (known: {})", known.join(", ")),
                )
            })?;
            let scale = opts.scalar("scale")?.unwrap_or(ScalarOperand::Imm(1.0));
            let bias = opts.tile("bias")?;
            let reduce = opts.tile("reduce")?;
            Op::Activation { dst, src, func, scale, bias, reduce }
        }
        "iota" => {
            let dst = next();
            Op::Iota { dst, affine: opts.affine(op_col)? }
        }
        "affine_select" => {
            let (dst, src) = (next(), next());
            let cmp = opts
                .alu("cmp")?
                .ok_or_else(|| opts.err(op_col, "missing option cmp=CMP_OP".into()))?;
            if !cmp.is_comparison() {
                return Err(opts.err(
                    op_col,
                    format!(
                        "cmp must be a comparison (eq, ne, ge, gt, le, lt), not '{}'",
                        cmp.name()
                    ),
                ));
            }
            let affine = opts.affine(op_col)?;
            Op::AffineSelect {
                dst,
                src,
                affine,
                cmp,
                on_false: opts.required_f32("on_false", op_col)?,
            }
        }
        _ => unreachable!("every table opcode is handled"),
    };
    opts.finish(&name)?;
    Ok(Instruction { engine, op, waits, signals })
}

/// Parses a whole program. Declarations must precede the instructions that use them.
pub fn parse(text: &str) -> Result<Program, ParseError> {
    let mut program = Program::default();
    for (i, line) in text.lines().enumerate() {
        let lineno = i as u32 + 1;
        let toks = lex(line, lineno)?;
        if toks.is_empty() {
            continue;
        }
        let end_col = line.split('#').next().map_or(1, |s| s.trim_end().chars().count() as u32 + 1);
        let mut c = Cursor { toks: &toks, pos: 0, line: lineno, end_col };
        if matches!(c.peek(), Some(Tok::Ident(s)) if s == "hbm") {
            c.pos += 1;
            let decl = declaration(&mut c, &program.tensors)?;
            program.tensors.push(decl);
        } else {
            let ins = instruction(&mut c, &program.tensors)?;
            program.instructions.push(ins);
            program.lines.push(lineno);
        }
    }
    if program.instructions.is_empty() {
        return Err(ParseError {
            line: 1,
            column: 1,
            message: "the program has no instructions".into(),
        });
    }
    Ok(program)
}
