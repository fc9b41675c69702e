pub mod convert;
pub mod inspect;
pub mod scan;
pub mod sign;
