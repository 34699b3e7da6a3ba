// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @dev The one Safe function a module calls (Safe v1.4.1 ModuleManager); operation 0 is Call.
interface ISafe {
    function execTransactionFromModule(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        returns (bool success);
}

/// @title PauseGuardianModule
/// @notice A Safe module that lets any one guardian pause the escrow at once, without the Safe's threshold.
///         Unpausing, and every other owner action, still needs a Safe transaction signed by the threshold.
/// @dev The only call this module can make through the Safe is `escrow.pause()`: there is no generic exec and
///      no fallback, so a stolen guardian key can stop trading but never move funds or change settings.
contract PauseGuardianModule is EIP712 {
    bytes32 public constant PAUSE_TYPEHASH = keccak256("Pause(address escrow,uint256 nonce,uint256 deadline)");
    // Operation.Call in Safe's Enum: a DelegateCall would run the escrow's code in the Safe's storage.
    uint8 private constant CALL = 0;

    address public immutable safe;
    address public immutable escrow;
    /// @notice Counts guardian pauses; a signed pause is valid for the next one only, so it cannot be replayed.
    uint256 public nonce;

    address[] private _guardians;
    /// @dev 1-based position in _guardians (0 = not a guardian), for O(1) removal.
    mapping(address => uint256) private _guardianIndex;

    event GuardianAdded(address guardian);
    event GuardianRemoved(address guardian);
    event GuardianPaused(address indexed guardian, uint256 nonce);

    error NotGuardian(address caller);
    error NotSafe(address caller);
    error PauseFailed();
    error SignatureExpired(uint256 deadline);
    error ZeroAddress();
    error AlreadyGuardian(address guardian);
    error UnknownGuardian(address guardian);

    modifier onlySafe() {
        if (msg.sender != safe) revert NotSafe(msg.sender);
        _;
    }

    constructor(address safe_, address escrow_, address[] memory guardians_) EIP712("PauseGuardianModule", "1") {
        if (safe_ == address(0) || escrow_ == address(0)) revert ZeroAddress();
        safe = safe_;
        escrow = escrow_;
        for (uint256 i = 0; i < guardians_.length; i++) {
            _addGuardian(guardians_[i]);
        }
    }

    // ------------------------------------------------------------------ pause

    /// @notice A guardian pauses the escrow with one transaction of their own.
    function pause() external {
        if (_guardianIndex[msg.sender] == 0) revert NotGuardian(msg.sender);
        _pause(msg.sender);
    }

    /// @notice Anyone (a relayer paying the gas) submits a guardian's EIP-712 signature over the next pause.
    function pauseBySignature(uint256 deadline, bytes calldata signature) external {
        if (block.timestamp > deadline) revert SignatureExpired(deadline);
        // The digest includes the current nonce: a signature over an earlier nonce recovers to another address.
        address signer = ECDSA.recoverCalldata(pauseDigest(deadline), signature);
        if (_guardianIndex[signer] == 0) revert NotGuardian(signer);
        _pause(signer);
    }

    /// @notice The EIP-712 digest a guardian signs for a pause with the current nonce.
    function pauseDigest(uint256 deadline) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(PAUSE_TYPEHASH, escrow, nonce, deadline)));
    }

    function _pause(address guardian) private {
        // Every pause, direct or signed, consumes the nonce (before the call): a signature made for an earlier
        // incident cannot pause again after the Safe has unpaused.
        uint256 used = nonce++;
        bool ok = ISafe(safe).execTransactionFromModule(escrow, 0, abi.encodeWithSignature("pause()"), CALL);
        // The Safe reports a failed inner call as false, not a revert (e.g. the escrow is already paused).
        if (!ok) revert PauseFailed();
        emit GuardianPaused(guardian, used);
    }

    // ------------------------------------------------------------------ guardians (the Safe's threshold only)

    function addGuardian(address guardian) external onlySafe {
        _addGuardian(guardian);
    }

    function removeGuardian(address guardian) external onlySafe {
        uint256 index = _guardianIndex[guardian];
        if (index == 0) revert UnknownGuardian(guardian);
        address last = _guardians[_guardians.length - 1];
        _guardians[index - 1] = last;
        _guardianIndex[last] = index;
        _guardians.pop();
        delete _guardianIndex[guardian];
        emit GuardianRemoved(guardian);
    }

    function guardians() external view returns (address[] memory) {
        return _guardians;
    }

    function isGuardian(address account) external view returns (bool) {
        return _guardianIndex[account] != 0;
    }

    function _addGuardian(address guardian) private {
        if (guardian == address(0)) revert ZeroAddress();
        if (_guardianIndex[guardian] != 0) revert AlreadyGuardian(guardian);
        _guardians.push(guardian);
        _guardianIndex[guardian] = _guardians.length;
        emit GuardianAdded(guardian);
    }
}
