//! The pickle opcode set of protocols 0 to 5, as `Lib/pickletools.py` and
//! `Modules/_pickle.c` define it.

use serde::Serialize;

macro_rules! opcodes {
    ($( $name:ident = $byte:literal, $proto:literal, $text:literal; )*) => {
        /// One pickle opcode.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        #[repr(u8)]
        pub enum Op { $( $name = $byte, )* }

        impl Op {
            /// Decode an opcode byte; `None` for a byte that no protocol defines.
            pub fn from_byte(b: u8) -> Option<Op> {
                match b { $( $byte => Some(Op::$name), )* _ => None }
            }
            /// The protocol that introduced the opcode.
            pub fn protocol(self) -> u8 {
                match self { $( Op::$name => $proto, )* }
            }
            /// The name `pickletools` gives the opcode.
            pub fn name(self) -> &'static str {
                match self { $( Op::$name => $text, )* }
            }
            /// Every opcode, in byte order of declaration.
            pub const ALL: &'static [Op] = &[ $( Op::$name, )* ];
        }
    };
}

opcodes! {
    Mark = b'(', 0, "MARK";
    Stop = b'.', 0, "STOP";
    Pop = b'0', 0, "POP";
    PopMark = b'1', 1, "POP_MARK";
    Dup = b'2', 0, "DUP";
    Float = b'F', 0, "FLOAT";
    Int = b'I', 0, "INT";
    BinInt = b'J', 1, "BININT";
    BinInt1 = b'K', 1, "BININT1";
    Long = b'L', 0, "LONG";
    BinInt2 = b'M', 1, "BININT2";
    None = b'N', 0, "NONE";
    PersId = b'P', 0, "PERSID";
    BinPersId = b'Q', 1, "BINPERSID";
    Reduce = b'R', 0, "REDUCE";
    String = b'S', 0, "STRING";
    BinString = b'T', 1, "BINSTRING";
    ShortBinString = b'U', 1, "SHORT_BINSTRING";
    Unicode = b'V', 0, "UNICODE";
    BinUnicode = b'X', 1, "BINUNICODE";
    Append = b'a', 0, "APPEND";
    Build = b'b', 0, "BUILD";
    Global = b'c', 0, "GLOBAL";
    Dict = b'd', 0, "DICT";
    EmptyDict = b'}', 1, "EMPTY_DICT";
    Appends = b'e', 1, "APPENDS";
    Get = b'g', 0, "GET";
    BinGet = b'h', 1, "BINGET";
    Inst = b'i', 0, "INST";
    LongBinGet = b'j', 1, "LONG_BINGET";
    List = b'l', 0, "LIST";
    EmptyList = b']', 1, "EMPTY_LIST";
    Obj = b'o', 1, "OBJ";
    Put = b'p', 0, "PUT";
    BinPut = b'q', 1, "BINPUT";
    LongBinPut = b'r', 1, "LONG_BINPUT";
    SetItem = b's', 0, "SETITEM";
    Tuple = b't', 0, "TUPLE";
    EmptyTuple = b')', 1, "EMPTY_TUPLE";
    SetItems = b'u', 1, "SETITEMS";
    BinFloat = b'G', 1, "BINFLOAT";
    Proto = 0x80, 2, "PROTO";
    NewObj = 0x81, 2, "NEWOBJ";
    Ext1 = 0x82, 2, "EXT1";
    Ext2 = 0x83, 2, "EXT2";
    Ext4 = 0x84, 2, "EXT4";
    Tuple1 = 0x85, 2, "TUPLE1";
    Tuple2 = 0x86, 2, "TUPLE2";
    Tuple3 = 0x87, 2, "TUPLE3";
    NewTrue = 0x88, 2, "NEWTRUE";
    NewFalse = 0x89, 2, "NEWFALSE";
    Long1 = 0x8a, 2, "LONG1";
    Long4 = 0x8b, 2, "LONG4";
    BinBytes = b'B', 3, "BINBYTES";
    ShortBinBytes = b'C', 3, "SHORT_BINBYTES";
    ShortBinUnicode = 0x8c, 4, "SHORT_BINUNICODE";
    BinUnicode8 = 0x8d, 4, "BINUNICODE8";
    BinBytes8 = 0x8e, 4, "BINBYTES8";
    EmptySet = 0x8f, 4, "EMPTY_SET";
    AddItems = 0x90, 4, "ADDITEMS";
    FrozenSet = 0x91, 4, "FROZENSET";
    NewObjEx = 0x92, 4, "NEWOBJ_EX";
    StackGlobal = 0x93, 4, "STACK_GLOBAL";
    Memoize = 0x94, 4, "MEMOIZE";
    Frame = 0x95, 4, "FRAME";
    ByteArray8 = 0x96, 5, "BYTEARRAY8";
    NextBuffer = 0x97, 5, "NEXT_BUFFER";
    ReadonlyBuffer = 0x98, 5, "READONLY_BUFFER";
}

/// The opcodes `torch.load(weights_only=True)` accepts (`torch/_weights_only_unpickler.py`).
pub const WEIGHTS_ONLY_OPCODES: &[Op] = &[
    Op::Global,
    Op::NewObj,
    Op::Reduce,
    Op::Build,
    Op::Append,
    Op::Appends,
    Op::SetItem,
    Op::SetItems,
    Op::Mark,
    Op::Tuple,
    Op::Tuple1,
    Op::Tuple2,
    Op::Tuple3,
    Op::None,
    Op::NewTrue,
    Op::NewFalse,
    Op::EmptyTuple,
    Op::EmptyList,
    Op::EmptyDict,
    Op::EmptySet,
    Op::BinInt,
    Op::BinInt1,
    Op::BinInt2,
    Op::BinFloat,
    Op::Long1,
    Op::BinUnicode,
    Op::ShortBinString,
    Op::BinPersId,
    Op::BinGet,
    Op::LongBinGet,
    Op::BinPut,
    Op::LongBinPut,
    Op::Proto,
    Op::Stop,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        let mut n = 0;
        for b in 0..=255u8 {
            if let Some(op) = Op::from_byte(b) {
                assert_eq!(op as u8, b);
                n += 1;
            }
        }
        // pickletools.opcodes has 68 entries for protocols 0-5.
        assert_eq!(n, 68);
        assert_eq!(Op::ALL.len(), 68);
    }
}
