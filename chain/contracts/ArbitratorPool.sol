// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title ArbitratorPool
/// @notice Registry of staked arbitrators. The escrow contract asks it to assign an arbitrator to
///         a disputed order and reports back how each case ended (resolution or owner takeover).
/// @dev Stakes are held in the native coin. Reputation is a 0..100 score; new arbitrators start at 50.
contract ArbitratorPool is Ownable {
    struct Arbitrator {
        uint256 stakeAmount;
        uint256 reputation;
        uint256 totalResolved;
        uint256 totalEarned;
        bool isActive;
        uint64 registeredAt;
    }

    uint256 public constant INITIAL_REPUTATION = 50;
    uint256 public constant MAX_REPUTATION = 100;
    uint256 public constant RESOLUTION_REWARD = 2;
    uint256 public constant TIMEOUT_PENALTY = 15;
    uint256 public constant MIN_ACTIVE_REPUTATION = 10;

    mapping(address => Arbitrator) public arbitrators;
    address[] public activeArbitrators;
    /// @notice Number of disputes assigned to an arbitrator that are not closed yet.
    mapping(address => uint256) public openCases;
    /// @dev 1-based position in activeArbitrators (0 = not in the array).
    mapping(address => uint256) private _activeIndex;

    address public escrow;
    uint256 public minStake;

    event EscrowSet(address escrow);
    event ArbitratorRegistered(address indexed arbitrator, uint256 stakeAmount, uint256 reputation);
    event ArbitratorDeregistered(address indexed arbitrator, uint256 stakeReturned);
    event ArbitratorAssigned(uint256 indexed orderId, address indexed arbitrator);
    event ArbitratorResolved(address indexed arbitrator, uint256 indexed orderId, uint256 earned);
    event ReputationChanged(address indexed arbitrator, uint256 oldReputation, uint256 newReputation);
    event ArbitratorDeactivated(address indexed arbitrator, uint256 reputation);

    error NotEscrow();
    error ZeroAddress();
    error InsufficientStake(uint256 sent, uint256 required);
    error AlreadyActive();
    error NotActive();
    error HasOpenCases(uint256 openCases);
    error ReputationTooLow(uint256 reputation);
    error InvalidReputation(uint256 reputation);
    error NoArbitratorAvailable();
    error TransferFailed();

    modifier onlyEscrow() {
        if (msg.sender != escrow) revert NotEscrow();
        _;
    }

    constructor(uint256 minStake_, address initialOwner) Ownable(initialOwner) {
        minStake = minStake_;
    }

    // ------------------------------------------------------------------ owner

    function setEscrow(address escrow_) external onlyOwner {
        if (escrow_ == address(0)) revert ZeroAddress();
        escrow = escrow_;
        emit EscrowSet(escrow_);
    }

    /// @notice Operational override of an arbitrator's reputation (0..100). Does not change
    ///         the active flag; use it e.g. to let a deactivated arbitrator register again.
    function setReputation(address arbitrator, uint256 reputation) external onlyOwner {
        if (reputation > MAX_REPUTATION) revert InvalidReputation(reputation);
        Arbitrator storage a = arbitrators[arbitrator];
        uint256 old = a.reputation;
        a.reputation = reputation;
        emit ReputationChanged(arbitrator, old, reputation);
    }

    // ------------------------------------------------------------- arbitrators

    /// @notice Join the pool by staking at least `minStake` native coin. A returning arbitrator
    ///         keeps its reputation and statistics and adds to any stake still recorded.
    function register() external payable {
        if (msg.value < minStake) revert InsufficientStake(msg.value, minStake);
        Arbitrator storage a = arbitrators[msg.sender];
        if (a.isActive) revert AlreadyActive();
        if (a.registeredAt == 0) {
            a.reputation = INITIAL_REPUTATION;
        } else if (a.reputation < MIN_ACTIVE_REPUTATION) {
            revert ReputationTooLow(a.reputation);
        }
        a.stakeAmount += msg.value;
        a.isActive = true;
        a.registeredAt = uint64(block.timestamp);
        activeArbitrators.push(msg.sender);
        _activeIndex[msg.sender] = activeArbitrators.length;
        emit ArbitratorRegistered(msg.sender, a.stakeAmount, a.reputation);
    }

    /// @notice Leave the pool and get the stake back. Only possible with no open cases.
    function deregister() external {
        Arbitrator storage a = arbitrators[msg.sender];
        if (!a.isActive) revert NotActive();
        uint256 open = openCases[msg.sender];
        if (open != 0) revert HasOpenCases(open);
        uint256 stake = a.stakeAmount;
        a.stakeAmount = 0;
        a.isActive = false;
        _removeActive(msg.sender);
        emit ArbitratorDeregistered(msg.sender, stake);
        (bool ok, ) = payable(msg.sender).call{value: stake}("");
        if (!ok) revert TransferFailed();
    }

    function activeArbitratorCount() external view returns (uint256) {
        return activeArbitrators.length;
    }

    // ------------------------------------------------------------------ escrow

    /// @notice Pick an active arbitrator that is neither party of the order (pseudo-random start,
    ///         then linear probe). Not manipulation-proof; good enough for a stake-backed pool.
    function assignArbitrator(uint256 orderId, address buyer, address seller)
        external
        onlyEscrow
        returns (address)
    {
        uint256 n = activeArbitrators.length;
        if (n == 0) revert NoArbitratorAvailable();
        uint256 start = uint256(keccak256(abi.encode(orderId, block.prevrandao, block.timestamp))) % n;
        for (uint256 i = 0; i < n; ++i) {
            address candidate = activeArbitrators[(start + i) % n];
            if (candidate != buyer && candidate != seller) {
                openCases[candidate] += 1;
                emit ArbitratorAssigned(orderId, candidate);
                return candidate;
            }
        }
        revert NoArbitratorAvailable();
    }

    function recordResolution(address arbitrator, uint256 orderId, uint256 earned) external onlyEscrow {
        Arbitrator storage a = arbitrators[arbitrator];
        a.totalResolved += 1;
        a.totalEarned += earned;
        _closeCase(arbitrator);
        emit ArbitratorResolved(arbitrator, orderId, earned);

        uint256 old = a.reputation;
        uint256 updated = old + RESOLUTION_REWARD;
        if (updated > MAX_REPUTATION) updated = MAX_REPUTATION;
        a.reputation = updated;
        emit ReputationChanged(arbitrator, old, updated);
    }

    /// @notice Called when the owner had to resolve a dispute because the arbitrator timed out.
    ///         The stake is kept on record (not returned) when the arbitrator gets deactivated.
    function penalize(address arbitrator, uint256 orderId) external onlyEscrow {
        orderId; // part of the interface for off-chain correlation; events carry the escrow's orderId
        Arbitrator storage a = arbitrators[arbitrator];
        _closeCase(arbitrator);

        uint256 old = a.reputation;
        uint256 updated = old > TIMEOUT_PENALTY ? old - TIMEOUT_PENALTY : 0;
        a.reputation = updated;
        emit ReputationChanged(arbitrator, old, updated);

        if (updated < MIN_ACTIVE_REPUTATION && a.isActive) {
            a.isActive = false;
            _removeActive(arbitrator);
            emit ArbitratorDeactivated(arbitrator, updated);
        }
    }

    // ---------------------------------------------------------------- internal

    function _closeCase(address arbitrator) private {
        uint256 open = openCases[arbitrator];
        if (open != 0) openCases[arbitrator] = open - 1;
    }

    function _removeActive(address arbitrator) private {
        uint256 pos = _activeIndex[arbitrator];
        if (pos == 0) return;
        uint256 last = activeArbitrators.length;
        if (pos != last) {
            address moved = activeArbitrators[last - 1];
            activeArbitrators[pos - 1] = moved;
            _activeIndex[moved] = pos;
        }
        activeArbitrators.pop();
        delete _activeIndex[arbitrator];
    }
}
