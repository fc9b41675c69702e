//! The input as a read view sees it: where the unpickler reads next, and
//! how frames and the C unpickler's buffer change that.

use super::*;

/// The input as the chosen read view sees it.
pub(super) struct Src<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) view: ReadView,
    /// Linear view: end of the current frame, for anomaly detection.
    pub(super) frame_end: Option<usize>,
    /// File view: end of the unpickler's buffer when it holds a frame.
    pub(super) buf_end: Option<usize>,
    /// FRAME opcodes met so far (Mixed view).
    pub(super) frames_seen: u32,
    pub(super) anomalies: Vec<Anomaly>,
    pub(super) base: u64,
}

impl<'a> Src<'a> {
    pub(super) fn off(&self, p: usize) -> u64 {
        self.base + p as u64
    }

    /// Linear view: note reads that cross the end of the current frame.
    pub(super) fn check_frame(&mut self, n: usize) {
        if let Some(fe) = self.frame_end {
            if self.pos >= fe {
                self.frame_end = None;
            } else if self.pos + n > fe {
                let a = Anomaly::FrameStraddle {
                    offset: self.off(self.pos),
                    frame_end: self.off(fe),
                };
                self.anomalies.push(a);
                self.frame_end = None;
            }
        }
    }

    /// File view: a read that does not fit in the buffer drops its leftover bytes.
    pub(super) fn refill_for(&mut self, n: usize) {
        if let Some(be) = self.buf_end
            && self.pos + n > be
        {
            if self.pos < be {
                let a = Anomaly::FrameStraddle {
                    offset: self.off(self.pos),
                    frame_end: self.off(be),
                };
                self.anomalies.push(a);
                self.pos = be;
            }
            self.buf_end = None;
        }
    }

    /// `_Unpickler_Read`: exactly `n` bytes.
    pub(super) fn read(&mut self, n: usize) -> R<&'a [u8]> {
        match self.view {
            ReadView::Linear | ReadView::Joblib => self.check_frame(n),
            ReadView::FileNoPeek | ReadView::Mixed(_) => self.refill_for(n),
        }
        if n > self.data.len() - self.pos {
            return err("pickle data was truncated");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// `_Unpickler_ReadInto`, used for BINBYTES*/BYTEARRAY8: reads through
    /// the buffer end into the file, so no bytes are dropped in either view.
    pub(super) fn read_into(&mut self, n: u64) -> R<(usize, usize)> {
        if matches!(self.view, ReadView::Linear | ReadView::Joblib) {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            self.check_frame(n);
        }
        let avail = (self.data.len() - self.pos) as u64;
        if n > avail {
            return err("pickle data was truncated");
        }
        let start = self.pos;
        self.pos += n as usize;
        if let Some(be) = self.buf_end
            && self.pos >= be
        {
            self.buf_end = None;
        }
        Ok((start, n as usize))
    }

    /// `_Unpickler_Readline`: up to and including `\n`; returns the line without it.
    pub(super) fn readline(&mut self) -> R<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let nl = rest.iter().position(|&b| b == b'\n');
        match self.view {
            ReadView::Linear | ReadView::Joblib => {
                let n = nl.map(|i| i + 1).unwrap_or(rest.len() + 1);
                self.check_frame(n);
            }
            ReadView::FileNoPeek | ReadView::Mixed(_) => {
                if let Some(be) = self.buf_end {
                    let in_buf = nl.is_some_and(|i| self.pos + i < be);
                    if !in_buf {
                        self.refill_for(usize::MAX / 2);
                        return self.readline();
                    }
                }
            }
        }
        match nl {
            Some(i) => {
                let line = &rest[..i];
                self.pos += i + 1;
                Ok(line)
            }
            None => err("pickle data was truncated (no newline)"),
        }
    }

    /// FRAME: length already read; position the buffer as the view does.
    pub(super) fn frame(&mut self, len: u64, op_offset: usize) -> R<()> {
        let avail = (self.data.len() - self.pos) as u64;
        if len > avail {
            return err("pickle data was truncated (frame longer than the data)");
        }
        let len = len as usize;
        match self.view {
            ReadView::Linear | ReadView::Joblib => {
                if let Some(fe) = self.frame_end
                    && op_offset < fe
                {
                    let a = Anomaly::NestedFrame {
                        offset: self.off(op_offset),
                        frame_end: self.off(fe),
                    };
                    self.anomalies.push(a);
                }
                self.frame_end = Some(self.pos + len);
            }
            ReadView::FileNoPeek | ReadView::Mixed(_) => {
                let exact = match self.view {
                    ReadView::Mixed(m) => self.frames_seen < 32 && (m >> self.frames_seen) & 1 == 1,
                    _ => true,
                };
                self.frames_seen += 1;
                let fits = self.buf_end.is_some_and(|be| self.pos + len <= be);
                if !fits {
                    if let Some(be) = self.buf_end
                        && self.pos < be
                    {
                        let a = Anomaly::NestedFrame {
                            offset: self.off(op_offset),
                            frame_end: self.off(be),
                        };
                        self.anomalies.push(a);
                        self.pos = be;
                        if len > self.data.len() - self.pos {
                            return err("pickle data was truncated");
                        }
                    }
                    // Exactly the frame; or, through a peek window, the frame and
                    // what follows (no boundary to drop bytes at).
                    self.buf_end = if exact { Some(self.pos + len) } else { None };
                }
            }
        }
        Ok(())
    }
}
